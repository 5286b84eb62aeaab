"""Strict YAML configuration: pydantic models, every error with file and line.

Errors are collected, not raised one by one, and each names the file, the
line, the key, what was found and what was expected, in the manner of
Prometheus's rule loader:

>>> from pydantic import BaseModel, ConfigDict
>>> class M(BaseModel):
...     model_config = ConfigDict(extra="forbid")
...     window: Duration
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "m.yaml"
>>> _ = p.write_text("window: 5 parsecs\\nspeed: 3\\n")
>>> try:
...     load_model(p, M)
... except ConfigError as e:
...     print(str(e).replace(str(p), "m.yaml"))
m.yaml: 2 errors
  m.yaml:1: window: got '5 parsecs', expected a duration such as 30s, 5m, 1h or 1d
  m.yaml:2: speed: unknown key
>>> parse_duration("1h30m")
datetime.timedelta(seconds=5400)
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

__all__ = [
    "ConfigError",
    "Duration",
    "KeyedProblems",
    "load_model",
    "parse_duration",
    "repeated_ids",
    "secret_name",
    "validate_data",
]

M = TypeVar("M", bound=BaseModel)

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d))+$")


class ConfigError(ValueError):
    """A configuration that can't be used; ``problems`` lists each one.

    It survives a trip between processes (a spawned child's error keeps its message):

    >>> import pickle
    >>> pickle.loads(pickle.dumps(ConfigError("flags", ["flags: shards: got 0"]))).problems
    ['flags: shards: got 0']
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        n = len(problems)
        head = f"{source}: {n} error{'s' if n != 1 else ''}"
        super().__init__("\n  ".join([head, *problems]))

    def __reduce__(self):
        return type(self), (self.source, self.problems)


class KeyedProblems(ValueError):
    """Raised by a model validator that found problems at keys below its model.

    Each problem is ``(path, message)`` with ``path`` relative to the model
    being validated, so the loader reports it at that key's own line.
    """

    def __init__(self, problems: list[tuple[tuple, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))


def repeated_ids(section: str, ids: list[str], noun: str = "entry") -> list[tuple[tuple, str]]:
    """Problems for ids used more than once, each at the entry that repeats it.

    >>> repeated_ids("rules", ["a", "b", "a"], "rule")
    [(('rules', 2, 'id'), "got 'a', expected a unique id (rule 0 has it)")]
    """
    first: dict[str, int] = {}
    found = []
    for i, ident in enumerate(ids):
        if ident in first:
            found.append(
                (
                    (section, i, "id"),
                    f"got '{ident}', expected a unique id ({noun} {first[ident]} has it)",
                )
            )
        first.setdefault(ident, i)
    return found


def parse_duration(value: Any) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h30m``, ``1d`` (or a timedelta) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    text = str(value).strip()
    if not isinstance(value, str) or not _DURATION.match(text):
        raise ValueError("expected a duration such as 30s, 5m, 1h or 1d")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", text))
    if seconds <= 0:
        raise ValueError("expected a positive duration")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and list item."""


#: libyaml's safe loader where PyYAML has it (many times faster), for files that are valid.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _lines(node: yaml.Node, path: tuple, out: dict[tuple, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = (*path, k.value)
            out[key] = k.start_mark.line + 1
            _lines(v, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _line_of(loc: tuple, lines: dict[tuple, int]) -> int | None:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc)


def _describe(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "missing key"
    msg = err["msg"].removeprefix("Value error, ")
    if not msg.startswith("expected"):
        msg = f"expected {msg[0].lower()}{msg[1:]}" if msg else "expected a valid value"
    got = err.get("input")
    if isinstance(got, dict | list):  # a whole entry: its key and line say which
        return msg
    if _secret_key(err["loc"]):
        return f"got a value that is not shown (a secret), {msg}"
    return f"got {got!r}, {msg}"


def _secret_key(loc: tuple) -> bool:
    """Whether the key at ``loc`` holds a secret, whose value no message may echo.

    >>> _secret_key(("kafka", "sasl_password")), _secret_key(("kafka", "max_poll"))
    (True, False)
    """
    names = [p for p in loc if isinstance(p, str)]
    return bool(names) and secret_name(names[-1])


def secret_name(key: str) -> bool:
    """Whether a setting's name says it holds a secret (``sasl.password``, ``...secret``).

    >>> secret_name("sasl.oauthbearer.client.secret"), secret_name("client.id")
    (True, False)
    """
    key = key.lower()
    return any(w in key for w in ("password", "secret", "token", "credential"))


def _where(loc: tuple, source: str, lines: dict | None) -> str:
    line = _line_of(loc, lines or {})
    key = ".".join(str(p) for p in loc) or "(top level)"
    return f"{source}:{line}: {key}" if line else f"{source}: {key}"


def validate_data(
    data: Any, model: type[M], source: str, lines: dict | None = None, context: dict | None = None
) -> M:
    """Validate ``data`` into ``model``; raise :class:`ConfigError` listing every problem.

    A model may define ``problems(context) -> [(loc, message)]`` for checks that
    span entries (duplicate ids, coverage); they are reported at their entry.
    """
    try:
        value = model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _data_path(data, err["loc"])
            keyed = (err.get("ctx") or {}).get("error")
            if isinstance(keyed, KeyedProblems):
                for sub, msg in keyed.problems:
                    problems.append(f"{_where((*loc, *sub), source, lines)}: {msg}")
                continue
            problems.append(f"{_where(loc, source, lines)}: {_describe(err)}")
        raise ConfigError(source, _by_line(problems, source)) from None
    checks = getattr(value, "problems", None)
    found = checks(context or {}) if checks else []
    if found:
        raise ConfigError(source, [f"{_where(loc, source, lines)}: {msg}" for loc, msg in found])
    return value


def _data_path(data: Any, loc: tuple) -> tuple:
    """``loc`` without pydantic's own segments (validator names, union tags).

    A segment is kept if the data has it at that point, or if it is the last one
    (a missing key); the others name no key of the file.

    >>> _data_path({"models": [{"kind": "a", "alpha": 0}]}, ("models", 0, "a", "alpha"))
    ('models', 0, 'alpha')
    """
    kept, here = [], data
    for i, part in enumerate(loc):
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and isinstance(part, int) and 0 <= part < len(here):
            here = here[part]
        elif i < len(loc) - 1 or (isinstance(part, str) and part.startswith("function-")):
            continue
        kept.append(part)
    return tuple(kept)


def _by_line(problems: list[str], source: str) -> list[str]:
    """Problems in file order (stable for those on one line)."""

    def line(p: str) -> int:
        head = p[len(source) + 1 :].split(":", 1)[0] if p.startswith(f"{source}:") else ""
        return int(head) if head.isdigit() else 0

    return sorted(problems, key=line)


def load_model(path: Path | str, model: type[M], context: dict | None = None) -> M:
    """Load a YAML file into ``model``, with line numbers in every error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        data = None  # the line loader below says what is wrong, in its words
    else:
        try:  # a valid file needs no line numbers: they are only for the messages
            return validate_data(data if data is not None else {}, model, str(path), {}, context)
        except ConfigError:
            pass
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(str(path), [f"{where}: not valid YAML: {exc}"]) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _lines(node, (), lines)
    return validate_data(data if data is not None else {}, model, str(path), lines, context)
