"""What can be checked of the container image and compose.yaml without Docker.

Docker cannot run here, so these tests read ``Dockerfile``, ``.dockerignore``
and ``compose.yaml`` and check them against the repository: every path the
image copies exists and is sent to the build, the runtime stage is slim and
non-root with a health check, the image's command and every compose service's
command parse with the real parsers (Bytewax's ``bytewax.run``, the
``cityvitals`` click group) and run in the venv, the compose environment is the
documented configuration (``load_flow_config``), the flow services form one
consistent Bytewax cluster, and no secret is written inline. Each checker
returns a list of problems; the ``*_catches`` tests feed it a broken input to
show it can fail. One test runs the compose ``prepare`` step against the
session's real Kafka broker.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
import yaml

from cityvitals.cli import main as cli_main
from flows.config import ENV_PREFIX, ConfigError, FlowConfig, load_flow_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
BIN = Path(sys.executable).parent

#: Environment names the flow reads besides CITYVITALS__* (flows/config.py, README).
DOCUMENTED_ENV = {"KAFKA_BOOTSTRAP_SERVERS", "CITYVITALS_CONFIG"}
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|cargo|rustc)\b")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|SASL|API_?KEY)", re.I)
SECRET_ARG = re.compile(r"(password|secret|token|sasl\.jaas|ssl\.key\.)", re.I)


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass
class Stage:
    """One ``FROM`` stage: its base image, name and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """The arguments of every instruction ``keyword`` of this stage."""
        return [a for k, a in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The argv of an exec-form (JSON array) instruction, or its shell form split."""
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def copy_sources(args: str) -> tuple[list[str], bool]:
    """The sources of a COPY/ADD instruction and whether they come from another stage."""
    words = shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    from_stage = any(f.startswith("--from=") for f in flags)
    return paths[:-1], from_stage


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: ``*`` stays within a path segment, ``**`` does not."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, ignore_text: str) -> bool:
    """Whether ``path`` is left out of the build context (the last matching rule wins;
    a rule matching a parent directory matches the path, as in Docker's matcher)."""
    rules = []
    for raw in ignore_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((negate, _pattern_regex(pattern)))
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def _user_is_root(user: str) -> bool:
    name = user.split(":")[0].strip()
    return name in {"", "root", "0"}


def dockerfile_problems(text: str, ignore_text: str, root: Path = ROOT) -> list[str]:
    """Everything wrong with a Dockerfile by this project's rules (empty: nothing)."""
    problems = []
    stages = parse_dockerfile(text)
    if len(stages) < 2:
        problems.append("expected a multi-stage build (a build stage and a runtime stage)")
    for stage in stages:
        if stage.base != "python:3.11-slim":
            problems.append(f"base image {stage.base!r}, expected python:3.11-slim")
        for keyword in ("COPY", "ADD"):
            for args in stage.args(keyword):
                sources, from_stage = copy_sources(args)
                if from_stage:
                    continue
                for src in sources:
                    if not list(root.glob(src)):
                        problems.append(f"{keyword} {src}: no such path in the repository")
                    elif dockerignored(src, ignore_text):
                        problems.append(f"{keyword} {src}: excluded by .dockerignore")
    if not stages:
        return [*problems, "no FROM"]
    runtime = stages[-1]
    users = runtime.args("USER")
    if not users:
        problems.append("runtime stage has no USER (it would run as root)")
    elif _user_is_root(users[-1]):
        problems.append(f"runtime stage runs as root (USER {users[-1]})")
    checks = runtime.args("HEALTHCHECK")
    if not checks or checks[-1].upper().startswith("NONE"):
        problems.append("runtime stage has no HEALTHCHECK")
    for args in runtime.args("RUN"):
        if re.search(r"apt-get\s+install|apk\s+add", args) and BUILD_TOOLS.search(args):
            problems.append(f"build tools installed in the runtime stage: {args}")
        if re.search(r"pip\s+install", args) and "--no-cache-dir" not in args:
            problems.append(f"pip install without --no-cache-dir in the runtime stage: {args}")
    for keyword in ("COPY", "ADD"):
        for args in runtime.args(keyword):
            sources, from_stage = copy_sources(args)
            if not from_stage:
                problems.append(f"runtime stage copies sources from the context: {args}")
    if not runtime.args("ENTRYPOINT") and not runtime.args("CMD"):
        problems.append("runtime stage has no ENTRYPOINT/CMD")
    return problems


def image_command(text: str) -> tuple[list[str], list[str]]:
    """The runtime stage's ENTRYPOINT and CMD, as argv lists."""
    runtime = parse_dockerfile(text)[-1]
    entry = runtime.args("ENTRYPOINT")
    cmd = runtime.args("CMD")
    return (exec_form(entry[-1]) if entry else []), (exec_form(cmd[-1]) if cmd else [])


def image_healthcheck(text: str) -> list[str]:
    """The argv of the runtime stage's HEALTHCHECK ``CMD``."""
    args = parse_dockerfile(text)[-1].args("HEALTHCHECK")[-1]
    return exec_form(args.split(" CMD ", 1)[1].strip())


def image_env(text: str) -> dict[str, str]:
    """The runtime stage's ENV settings (``KEY=VALUE`` form)."""
    env = {}
    for args in parse_dockerfile(text)[-1].args("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


# --------------------------------------------------------------------------- command checks


def _parse_bytewax_args(argv: list[str]):
    """``python -m bytewax.run`` arguments parsed by Bytewax's own parser (no dataflow run)."""
    from bytewax import run

    saved = sys.argv
    sys.argv = ["bytewax.run", *argv]
    try:
        return run._parse_args()
    finally:
        sys.argv = saved


def bytewax_problems(argv: list[str]) -> list[str]:
    """Problems of a ``python -m bytewax.run`` command line: flags, and the module's import."""
    problems = []
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            args = _parse_bytewax_args(argv)
    except SystemExit:
        return [f"bytewax.run rejects {argv}"]
    module, _, attr = args.import_str.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return [f"cannot import {module}: {exc}"]
    if (attr or "flow") != "flow" or "__getattr__" not in vars(mod):
        problems.append(f"{args.import_str} does not name a dataflow the module builds")
    return problems


def cli_problems(argv: list[str]) -> list[str]:
    """Problems of a ``cityvitals ...`` command line, parsed by the click group (not run)."""
    if not argv or argv[0] not in cli_main.commands:
        return [f"cityvitals has no command {argv[:1]}"]
    command = cli_main.commands[argv[0]]
    try:
        command.make_context(argv[0], list(argv[1:]), resilient_parsing=False)
    except click.ClickException as exc:
        return [f"cityvitals {argv[0]}: {exc.format_message()}"]
    return []


def command_problems(argv: list[str]) -> list[str]:
    """Problems of a full container command (entrypoint + command)."""
    if argv[:3] == ["python", "-m", "bytewax.run"]:
        return bytewax_problems(argv[3:])
    if argv[:1] == ["cityvitals"]:
        return cli_problems(argv[1:])
    return [f"unknown program {argv[:3]}"]


# --------------------------------------------------------------------------- compose checks


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value, environ: dict[str, str]):
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution over a loaded document."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: environ.get(m[1]) or (m[2] or ""), value)
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    return value


def load_compose(text: str, environ: dict[str, str] | None = None) -> dict:
    """compose.yaml as compose reads it, interpolated from ``environ`` (default: empty)."""
    return interpolate(yaml.safe_load(text), environ or {})


def service_env(service: dict) -> dict[str, str]:
    """A service's environment as strings (mapping or ``KEY=VALUE`` list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def service_argv(service: dict, dockerfile: str) -> list[str] | None:
    """The argv a service of the project image runs (its entrypoint/command, else the image's)."""
    entry, cmd = image_command(dockerfile)
    if "entrypoint" in service:
        entry = service["entrypoint"]
        cmd = []  # compose: a new entrypoint drops the image's CMD
    if "command" in service:
        cmd = service["command"]
    entry = shlex.split(entry) if isinstance(entry, str) else list(entry)
    cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    return [str(a) for a in entry + cmd]


def _flag(argv: list[str], *names: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in names]


def _secret_file(compose: dict, env: dict[str, str], root: Path) -> dict[str, str]:
    """``env`` with CITYVITALS_CONFIG pointing at the repository file of its compose secret."""
    path = env.get("CITYVITALS_CONFIG")
    if path and path.startswith("/run/secrets/"):
        secret = compose.get("secrets", {}).get(path.removeprefix("/run/secrets/"), {})
        if "file" in secret:
            return {**env, "CITYVITALS_CONFIG": str(root / secret["file"])}
    return env


def _model_has(path: list[str]) -> bool:
    """Whether a CITYVITALS__ variable's path names a field of FlowConfig."""
    model = FlowConfig
    for i, key in enumerate(path):
        fields = getattr(model, "model_fields", None)
        if fields is None or key not in fields:
            return False
        if key == "client" and i == len(path) - 2:
            return True  # kafka.client.<librdkafka setting>
        model = fields[key].annotation
    return True


def compose_problems(text: str, dockerfile: str, root: Path = ROOT) -> list[str]:
    """Everything wrong with a compose file by this project's rules (empty: nothing)."""
    problems = []
    raw = yaml.safe_load(text)
    compose = load_compose(text)
    services = compose.get("services", {})
    for name in ("kafka", "simulator"):
        if name not in services:
            problems.append(f"no service {name}")
    kafka = services.get("kafka", {})
    if kafka.get("image") != "apache/kafka:4.1.1":
        problems.append(f"kafka image {kafka.get('image')!r}, expected apache/kafka:4.1.1")
    kenv = service_env(kafka)
    roles = set(kenv.get("KAFKA_PROCESS_ROLES", "").split(","))
    if roles != {"broker", "controller"} or any("ZOOKEEPER" in k for k in kenv):
        problems.append("kafka is not a single KRaft node (process.roles broker,controller)")
    if "healthcheck" not in kafka:
        problems.append("kafka has no healthcheck")
    advertised = kenv.get("KAFKA_ADVERTISED_LISTENERS", "")

    project = {n: s for n, s in services.items() if s.get("image") == "cityvitals:local"}
    flows: dict[str, list[str]] = {}
    for name, service in project.items():
        argv = service_argv(service, dockerfile)
        problems += [f"{name}: {p}" for p in command_problems(argv)]
        if argv[:3] == ["python", "-m", "bytewax.run"]:
            flows[name] = argv[3:]
        user = str(service.get("user", ""))
        if "user" in service and _user_is_root(user):
            problems.append(f"{name}: runs as root (user: {user})")
        env = service_env(service)
        raw_env = service_env(raw["services"][name])
        for var, value in env.items():
            if var not in DOCUMENTED_ENV and not var.startswith(ENV_PREFIX):
                problems.append(f"{name}: {var} is not a documented setting")
            if var.startswith(ENV_PREFIX):
                path = [p.lower() for p in var.removeprefix(ENV_PREFIX).split("__")]
                if not _model_has(path):
                    problems.append(f"{name}: {var} names no key of FlowConfig")
            if SECRET_NAME.search(var) and value and not raw_env[var].startswith("${"):
                problems.append(f"{name}: secret {var} written inline")
        for arg in argv:
            if SECRET_ARG.search(arg):
                problems.append(f"{name}: secret on the command line: {arg}")
        if argv[:3] == ["python", "-m", "bytewax.run"] or argv[1:2] == ["prepare"]:
            try:
                config = load_flow_config(_secret_file(compose, env, root))
            except ConfigError as exc:  # also a missing or unreadable settings file
                problems.append(f"{name}: environment rejected: {exc}")
                continue
            host = config.kafka.bootstrap_servers.split(",")[0]
            if host not in advertised:
                problems.append(f"{name}: {host} is not a listener kafka advertises")

    problems += cluster_problems(compose, flows, root)
    return problems


def cluster_problems(compose: dict, flows: dict[str, list[str]], root: Path = ROOT) -> list[str]:
    """The flow services must form one Bytewax cluster sharing one lake and recovery store."""
    services = compose["services"]
    if len(flows) < 2:
        return [f"expected two dataflow processes, found {sorted(flows)}"]
    problems = []
    addresses = {name: _flag(argv, "-a", "--addresses") for name, argv in flows.items()}
    indices = {name: _flag(argv, "-i", "--process-id") for name, argv in flows.items()}
    for name, given in addresses.items():
        if len(given) != 1:
            problems.append(f"{name}: -a given {len(given)} times; bytewax.run keeps only the last")
    lists = {name: given[-1].split(";") for name, given in addresses.items() if given}
    if len({tuple(v) for v in lists.values()}) > 1:
        problems.append(f"flow services disagree on -a: {lists}")
    index_of = {}
    for name, given in indices.items():
        if len(given) != 1 or not given[0].isdigit():
            problems.append(f"{name}: expected one -i N, got {given}")
        else:
            index_of[name] = int(given[0])
    if sorted(index_of.values()) != list(range(len(flows))):
        problems.append(f"-i indices {sorted(index_of.values())} are not 0..{len(flows) - 1}")
    for name, i in index_of.items():
        listed = lists.get(name, [])
        host = services[name].get("hostname", name)
        if i < len(listed) and listed[i].rsplit(":", 1)[0] not in {name, host}:
            problems.append(f"{name}: -i {i} points at {listed[i]} in -a, not at itself")
    if lists and len(next(iter(lists.values()))) != len(flows):
        problems.append(f"-a lists {next(iter(lists.values()))} for services {sorted(flows)}")
    workers = [_flag(argv, "-w", "--workers-per-process") for argv in flows.values()]
    if any(len(w) != 1 for w in workers) or len({w[0] for w in workers}) != 1:
        problems.append(f"flow services disagree on -w: {workers}")
    recovery = {tuple(_flag(argv, "-r", "--recovery-directory")) for argv in flows.values()}
    if len(recovery) != 1 or len(next(iter(recovery))) != 1:
        problems.append(f"expected one -r shared by every process, got {recovery}")
    for name, argv in flows.items():
        if not _flag(argv, "-s") or not _flag(argv, "-b"):
            problems.append(f"{name}: recovery needs -s and -b")
    mounts = {name: _mounts(services[name]) for name in flows}
    for name, argv in flows.items():
        env = service_env(services[name])
        out = env.get("CITYVITALS__PIPELINE__OUT", "data")
        rec = _flag(argv, "-r")
        for target in [out, *rec]:
            if target not in mounts[name]:
                problems.append(f"{name}: {target} is not on a volume")
    for target in {t for m in mounts.values() for t in m}:
        sources = {m.get(target) for m in mounts.values()}
        if len(sources) != 1:
            problems.append(f"flow services mount different volumes at {target}: {sources}")
    if workers and all(len(w) == 1 for w in workers):
        total = len(flows) * int(workers[0][0])
        env = _secret_file(compose, service_env(services[next(iter(flows))]), root)
        try:
            shards = load_flow_config(env).pipeline.shards
        except ConfigError:
            shards = total  # reported with the service's environment
        if shards < total:
            problems.append(f"pipeline.shards {shards} < {total} workers in the cluster")
    return problems


def _mounts(service: dict) -> dict[str, str]:
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, target = volume.partition(":")
            out[target.split(":")[0]] = source
        else:
            out[volume["target"]] = volume.get("source", "")
    return out


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


def test_dockerfile_follows_the_rules(dockerfile):
    assert dockerfile_problems(dockerfile, DOCKERIGNORE.read_text(encoding="utf-8")) == []


def test_build_copies_exactly_the_packages_of_the_wheel(dockerfile):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = set(pyproject["tool"]["setuptools"]["packages"])
    build = parse_dockerfile(dockerfile)[0]
    copied = {s.rstrip("/") for a in build.args("COPY") for s in copy_sources(a)[0]}
    assert copied == packages | {"pyproject.toml", pyproject["project"]["readme"]}


def test_dockerignore_keeps_the_package_data_and_drops_the_rest():
    ignore = DOCKERIGNORE.read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for package, patterns in pyproject["tool"]["setuptools"]["package-data"].items():
        files = [p for pat in patterns for p in (ROOT / package).glob(pat)]
        assert files, f"no package data {package}/{patterns}"
        for path in files:
            assert not dockerignored(str(path.relative_to(ROOT)), ignore), path
    assert not dockerignored("flows/city_kafka.py", ignore)
    for path in (
        "tests/test_container.py",
        ".venv/bin/python",
        "data/cityvitals.duckdb",
        "flows/__pycache__/city.cpython-311.pyc",
        ".git/HEAD",
        "notebooks",
    ):
        assert dockerignored(path, ignore), path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("USER 10001:10001", "USER root"), "runs as root"),
        (("USER 10001:10001\n", ""), "has no USER"),
        (("HEALTHCHECK", "# HEALTHCHECK"), "no HEALTHCHECK"),
        (("COPY schemas schemas", "COPY schemas schemas\nCOPY nowhere nowhere"), "COPY nowhere"),
        (("COPY flows flows", "COPY tests tests"), "excluded by .dockerignore"),
        (
            (
                "ENV PYTHONDONTWRITEBYTECODE",
                "RUN apt-get install -y gcc\nENV PYTHONDONTWRITEBYTECODE",
            ),
            "build tools",
        ),
        (("FROM python:3.11-slim AS runtime", "FROM python:latest AS runtime"), "python:latest"),
    ],
)
def test_dockerfile_checker_catches(dockerfile, change, expected):
    old, new = change
    assert old in dockerfile
    ignore = DOCKERIGNORE.read_text(encoding="utf-8")
    problems = dockerfile_problems(dockerfile.replace(old, new, 1), ignore)
    assert any(expected in p for p in problems), problems


def test_image_command_is_the_kafka_flow_and_parses(dockerfile):
    entry, cmd = image_command(dockerfile)
    argv = entry + cmd
    assert argv[:4] == ["python", "-m", "bytewax.run", "flows.city_kafka"]
    assert command_problems(argv) == []


def test_image_command_runs_in_the_venv(dockerfile, tmp_path):
    """The image's command, run here with --help; and the flow module imports."""
    entry, cmd = image_command(dockerfile)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [str(BIN / "python"), *entry[1:], *cmd, "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "--workers-per-process" in out.stdout
    probe = "import flows.city_kafka as m; print(m.build_kafka_flow.__name__)"
    out = subprocess.run(
        [str(BIN / "python"), "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and out.stdout.strip() == "build_kafka_flow", out.stderr


def test_healthcheck_passes_for_a_started_flow_and_fails_otherwise(dockerfile, tmp_path):
    argv = image_healthcheck(dockerfile)
    assert argv[:2] == ["cityvitals", "health"]
    assert cli_problems(argv[1:]) == []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYVITALS", "BYTEWAX_"))}
    assert image_env(dockerfile)["CITYVITALS__PIPELINE__OUT"] == "/data"
    env["CITYVITALS__PIPELINE__OUT"] = str(tmp_path / "lake")  # the image's /data, here
    cli = str(BIN / "cityvitals")

    def run(*args):
        return subprocess.run(
            [cli, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    before = run(*argv[1:])
    assert before.returncode == 1 and "has not started" in before.stderr
    prepared = run("prepare", "--recovery", str(tmp_path / "rec"), "--partitions", "2")
    assert prepared.returncode == 0, prepared.stderr
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
        "part-0.sqlite3",
        "part-1.sqlite3",
    ]
    again = run("prepare", "--recovery", str(tmp_path / "rec"), "--partitions", "2")
    assert again.returncode == 0 and "kept" in again.stdout, again.stderr
    assert run(*argv[1:]).returncode == 0
    assert run(*argv[1:], "--recovery", str(tmp_path / "rec")).returncode == 0
    old = 1_000_000_000
    for p in (tmp_path / "rec").iterdir():
        os.utime(p, (old, old))
    stale = run(*argv[1:], "--recovery", str(tmp_path / "rec"))
    assert stale.returncode == 1 and "old" in stale.stderr


def test_compose_follows_the_rules(compose_text, dockerfile):
    assert compose_problems(compose_text, dockerfile) == []


def test_compose_environment_is_the_documented_configuration(compose_text):
    compose = load_compose(compose_text)
    flow = compose["services"]["flow-0"]
    env = _secret_file(compose, service_env(flow), ROOT)
    assert Path(env["CITYVITALS_CONFIG"]).is_file()
    config = load_flow_config(env)
    assert config.pipeline.out == Path("/data")
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.kafka.client == {"client.id": "cityvitals-compose"}
    elsewhere = load_flow_config(
        _secret_file(
            compose,
            service_env(
                load_compose(compose_text, {"KAFKA_BOOTSTRAP_SERVERS": "b1:9093"})["services"][
                    "flow-0"
                ]
            ),
            ROOT,
        )
    )
    assert elsewhere.kafka.bootstrap_servers == "b1:9093"


def test_compose_cluster_matches_its_services(compose_text, dockerfile):
    compose = load_compose(compose_text)
    flows = {
        name: service_argv(s, dockerfile)[3:]
        for name, s in compose["services"].items()
        if s.get("image") == "cityvitals:local" and "bytewax.run" in service_argv(s, dockerfile)
    }
    assert sorted(flows) == ["flow-0", "flow-1"]
    for name, argv in flows.items():
        assert _flag(argv, "-a") == ["flow-0:2101;flow-1:2101"]
        assert _flag(argv, "-i") == [name.removeprefix("flow-")]
        args = _parse_bytewax_args(argv)
        assert args.addresses.split(";") == ["flow-0:2101", "flow-1:2101"]
        assert args.workers_per_process == 2
        assert str(args.recovery_directory) == "/recovery"
    prepare = service_argv(compose["services"]["prepare"], dockerfile)
    assert _flag(prepare, "--recovery") == ["/recovery"]
    for name in flows:
        health = compose["services"][name]["healthcheck"]["test"]
        assert health[1:3] == ["cityvitals", "health"] and "/recovery" in health
        assert cli_problems(health[2:]) == []
        deps = compose["services"][name]["depends_on"]
        assert deps["prepare"]["condition"] == "service_completed_successfully"


def _mutate(text: str, old: str, new: str) -> str:
    """``text`` with the first ``old`` replaced (it must be there)."""
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '"flow-0:2101;flow-1:2101"\n      - "-r"',
            '"flow-0:2101"\n      - "-a"\n      - "flow-1:2101"\n      - "-r"',
            "-a given 2 times",
        ),
        ('- "1"\n      - "-a"', '- "0"\n      - "-a"', "-i indices [0, 0]"),
        ("CITYVITALS__PIPELINE__SHARDS", "CITYVITALS__PIPELINE__SHARD", "names no key"),
        (
            'CITYVITALS__PIPELINE__SHARDS: "4"',
            'CITYVITALS__PIPELINE__SHARDS: "2"',
            "pipeline.shards 2 < 4",
        ),
        (
            "CITYVITALS__PIPELINE__CLOCK: event",
            "CITYVITALS__PIPELINE__CLOCK: sundial",
            "environment rejected",
        ),
        (
            "CITYVITALS_CONFIG: /run/secrets/cityvitals_config",
            "CITYVITALS_CONFIG: /run/secrets/cityvitals_config\n  "
            "CITYVITALS__KAFKA__CLIENT__SASL_PASSWORD: hunter2",
            "written inline",
        ),
        (
            '"--rate"',
            '"--kafka-config"\n      - "sasl.password=hunter2"\n      - "--rate"',
            "secret on the command line",
        ),
        ("- simulate", "- simulator", "has no command"),
        (
            '"--partitions", "4", "--input-topics"',
            '"--partitions", "4", "--input-topic"',
            "No such option",
        ),
        (
            '      - flows.city_kafka\n      - "-w"\n      - "2"\n      - "-i"\n      - "1"',
            '      - flows.city_kafkaa\n      - "-w"\n      - "2"\n      - "-i"\n      - "1"',
            "cannot import",
        ),
        ("hostname: flow-1\n", "hostname: flow-1\n    user: root\n", "runs as root"),
        (
            "      - lake:/data\n      - recovery:/recovery\n    healthcheck:\n      test: "
            '["CMD", "cityvitals", "health"',
            "      - lake1:/data\n      - recovery:/recovery\n    healthcheck:\n      test: "
            '["CMD", "cityvitals", "health"',
            "different volumes at /data",
        ),
        (
            "KAFKA_PROCESS_ROLES: broker,controller",
            "KAFKA_PROCESS_ROLES: broker",
            "single KRaft node",
        ),
        (
            "CITYVITALS__PIPELINE__OUT: /data",
            "CITYVITALS__PIPELINE__OUT: /data\n  CITYVITALS_OUT: /data",
            "CITYVITALS_OUT is not a documented setting",
        ),
    ],
)
def test_compose_checker_catches(compose_text, dockerfile, old, new, expected):
    text = _mutate(compose_text, old, new)
    problems = compose_problems(text, dockerfile)
    assert any(expected in p for p in problems), problems


def test_committed_settings_file_holds_no_secret():
    data = yaml.safe_load((ROOT / "config" / "kafka.compose.yaml").read_text(encoding="utf-8"))
    kafka = data["kafka"]
    assert not [k for k in kafka.get("client", {}) if SECRET_ARG.search(k) or "sasl" in k], kafka
    assert not [k for k in kafka if "password" in k], kafka


def test_prepare_creates_the_input_topics_the_flow_reads(kafka_bootstrap, topic_prefix, tmp_path):
    """The compose `prepare` step on a real broker: the configured input topics, idempotently."""
    from confluent_kafka.admin import AdminClient

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYVITALS", "KAFKA_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CITYVITALS__PIPELINE__OUT": str(tmp_path / "lake"),
            "CITYVITALS__KAFKA__TOPICS__READINGS": topic_prefix + "readings",
            "CITYVITALS__KAFKA__TOPICS__HEARTBEATS": topic_prefix + "heartbeats",
            "CITYVITALS__KAFKA__TOPICS__GATES": topic_prefix + "gates",
            "CITYVITALS__KAFKA__TOPICS__WORKORDERS": topic_prefix + "workorders",
        }
    )
    argv = [str(BIN / "cityvitals"), "prepare", "--input-topics", "3"]
    for expected in ("created: 4", "created: 0"):
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert expected in out.stdout
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=15).topics
    for family in ("readings", "heartbeats", "gates", "workorders"):
        assert len(topics[topic_prefix + family].partitions) == 3


@pytest.mark.parametrize("broken", [False, True])
def test_no_secret_in_the_output_of_the_container_commands(tmp_path, broken):
    """prepare and health print paths and counts, and a settings error names the key, not the
    secret next to it."""
    secret = "s3cr3t-" + os.urandom(4).hex()
    settings = tmp_path / "kafka.yaml"
    settings.write_text(
        "kafka:\n"
        "  security_protocol: SASL_PLAINTEXT\n"
        "  sasl_mechanism: PLAIN\n"
        "  sasl_username: cityvitals\n"
        f"  sasl_password: {secret}\n" + ("  max_poll: 0\n" if broken else ""),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYVITALS", "BYTEWAX_"))}
    env.update({"CITYVITALS_CONFIG": str(settings), "CITYVITALS__PIPELINE__OUT": str(tmp_path)})
    for args in (["prepare", "--recovery", str(tmp_path / "rec")], ["health"]):
        out = subprocess.run(
            [str(BIN / "cityvitals"), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == (2 if broken else 0), out.stderr
        assert ("max_poll" in out.stderr) == broken
        assert secret not in out.stdout + out.stderr
