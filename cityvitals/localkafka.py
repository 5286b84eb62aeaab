"""A real single-node Apache Kafka broker on loopback, for tests and local runs.

No Docker: the broker is the official Kafka server run by the local ``java``,
in KRaft mode (one process is both broker and controller). Its jars come from
Maven Central, fetched once by ``mvn`` into a cache directory
(``$CITYVITALS_CACHE/kafka-<version>``, by default
``~/.cache/cityvitals/kafka-<version>``); later runs use the cache and need
neither the network nor ``mvn``.

In Python::

    with LocalKafka() as kafka:          # temporary directory, random free ports
        kafka.start()
        use(kafka.bootstrap)             # "127.0.0.1:<port>"
        kafka.stop()                     # e.g. to test an outage...
        kafka.start()                    # ...same ports, same data

From the shell (what ``make kafka-up`` / ``make kafka-down`` run)::

    python -m cityvitals.localkafka up [--dir .kafka]     # prints 127.0.0.1:<port>
    python -m cityvitals.localkafka status [--dir .kafka]
    python -m cityvitals.localkafka down [--dir .kafka]

The broker writes its log to ``<workdir>/broker.log`` (log4j, INFO) and the
JVM's own output to ``<workdir>/console.log``.

Cluster ids are 16 random bytes in URL-safe base64 without padding:

>>> len(new_cluster_id())
22
>>> parse_ports(render_server_properties(9092, 9093, Path("/tmp/d")))
(9092, 9093)
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "LocalKafka",
    "default_cache",
    "ensure_jars",
    "main",
    "metadata_ok",
    "new_cluster_id",
    "parse_ports",
    "render_server_properties",
]

#: The Kafka release run by :class:`LocalKafka` (Scala 2.13 build).
KAFKA_VERSION = "4.1.1"
#: The log4j 2 release Kafka 4.1 depends on; the SLF4J binding must match it.
LOG4J_VERSION = "2.24.3"
#: Pinned so the jar download does not depend on Maven's default plugin version.
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

#: JVM options: a small heap, and a JIT/GC set-up that starts fast on 2 cores.
JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

_STAMP = ".complete"
_HOST = "127.0.0.1"
_TAIL_LINES = 30

_POM = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by cityvitals.localkafka: the jars of a local Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0
                             https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cityvitals.local</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <!-- Kafka logs through SLF4J 1.7; without a binding it logs nothing. -->
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{plugin}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""

_LOG4J2 = """\
# Written by cityvitals.localkafka: the broker logs at INFO to broker.log.
status = warn
name = cityvitals-local-kafka
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class BrokerError(RuntimeError):
    """The local Kafka broker can't be provisioned, started, reached or stopped."""


def new_cluster_id() -> str:
    """A fresh KRaft cluster id: a random UUID in URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, it never starts with ``-``: the storage
    tool would read such an id as an option ("--cluster-id: expected one argument").
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def default_cache(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` are kept: under ``$CITYVITALS_CACHE`` or ``~/.cache``."""
    root = os.environ.get("CITYVITALS_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "cityvitals"
    return base / f"kafka-{version}"


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return f"(no {path.name})"


def _need(program: str, why: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise BrokerError(f"{program} not found on PATH: it is needed {why}")
    return found


def _capture(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``command`` without input; its stdout and stderr together, as text."""
    return subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
        check=False,
    )


def ensure_jars(version: str = KAFKA_VERSION, cache: Path | None = None) -> Path:
    """Fetch the Kafka ``version`` jars from Maven Central once; return their directory.

    The jars land in ``cache/lib`` (``cache`` defaults to :func:`default_cache`).
    A stamp file is written only once the whole download has succeeded, so an
    interrupted one is redone from scratch; with the stamp present this does
    nothing, and needs neither ``mvn`` nor the network. Concurrent callers wait
    for each other on a lock file.
    """
    cache = Path(cache) if cache is not None else default_cache(version)
    lib = cache / "lib"
    stamp = cache / _STAMP
    if stamp.is_file() and lib.is_dir():
        return lib
    _need("java", f"to run the Kafka {version} broker")
    mvn = _need("mvn", f"once, to fetch the Kafka {version} jars from Maven Central into {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and lib.is_dir():  # another process finished it meanwhile
            return lib
        partial = cache / "lib.partial"
        for stale in (partial, lib):
            shutil.rmtree(stale, ignore_errors=True)
        pom = cache / "pom.xml"
        pom.write_text(
            _POM.format(version=version, log4j=LOG4J_VERSION, plugin=DEPENDENCY_PLUGIN_VERSION)
        )
        command = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ]
        try:
            done = _capture(command, timeout=900)
        except subprocess.TimeoutExpired as exc:
            output = exc.output if isinstance(exc.output, str) else ""
            raise BrokerError(
                f"mvn did not fetch the Kafka {version} jars within {exc.timeout:.0f} s; "
                f"last output:\n{_tail(output)}"
            ) from exc
        jars = sorted(partial.glob("*.jar")) if partial.is_dir() else []
        if done.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise BrokerError(
                f"mvn failed to fetch the Kafka {version} jars (exit code {done.returncode}; "
                f"command: {' '.join(command)}); last output:\n{_tail(done.stdout)}"
            )
        partial.rename(lib)
        stamp.write_text("".join(f"{j.name}\n" for j in jars))
    return lib


def render_server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """The ``server.properties`` of a one-node KRaft cluster on loopback."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{_HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{_HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # One node: every internal topic has one replica, and few partitions,
        # so the first consumer group or transaction doesn't create 50 logs.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        # Fewer threads on a small machine.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def parse_ports(properties: str) -> tuple[int, int]:
    """The broker and controller ports of a ``server.properties`` text."""
    for line in properties.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "listeners":
            ports: dict[str, int] = {}
            for listener in value.split(","):
                name, _, address = listener.strip().partition("://")
                ports[name] = int(address.rpartition(":")[2])
            if "PLAINTEXT" in ports and "CONTROLLER" in ports:
                return ports["PLAINTEXT"], ports["CONTROLLER"]
    raise BrokerError("server.properties has no PLAINTEXT and CONTROLLER listeners")


def _port_free(port: int) -> bool:
    """Whether ``port`` can be listened on (with SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _pick_ports(count: int) -> list[int]:
    """``count`` distinct free ports, outside the ephemeral range when possible.

    Ports the kernel hands out to outgoing connections could be taken while a
    stopped broker is down; ports below that range can't, so a restart finds
    its ports free again.
    """
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    chosen: list[int] = []
    if low > 12000:
        for _ in range(200):
            port = rng.randrange(10000, low)
            if port not in chosen and _port_free(port):
                chosen.append(port)
                if len(chosen) == count:
                    return chosen
    socks = []
    try:
        while len(chosen) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((_HOST, 0))
            chosen.append(sock.getsockname()[1])
    finally:
        for sock in socks:
            sock.close()
    return chosen


def _can_connect(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _is_broker(pid: int, properties: Path) -> bool:
    """Whether ``pid`` is the Kafka JVM started on ``properties`` (not a reused pid)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    return b"kafka.Kafka" in cmdline and str(properties).encode() in cmdline


def metadata_ok(bootstrap: str, timeout: float = 5.0) -> bool:
    """Whether the broker at ``bootstrap`` answers a metadata request with itself in it."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # KafkaException on timeout or transport failure
        return False


class LocalKafka:
    """One Kafka broker process (KRaft, broker and controller) on 127.0.0.1.

    ``workdir`` holds ``server.properties``, the data (``data/``) and the logs.
    Without one, a temporary directory is made and :meth:`close` removes it.
    A ``workdir`` that already holds a broker's files is reused as is: same
    ports, same data. :meth:`start` after :meth:`stop` restarts the same broker,
    so topics and messages survive.
    """

    def __init__(self, workdir: Path | None = None, *, version: str = KAFKA_VERSION) -> None:
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="cityvitals-kafka-"))
            if workdir is None
            else Path(workdir).resolve()
        )
        self.version = version
        self.properties = self.workdir / "server.properties"
        self.data_dir = self.workdir / "data"
        self.log_file = self.workdir / "broker.log"
        self.console_file = self.workdir / "console.log"
        self._log4j = self.workdir / "log4j2.properties"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: tuple[int, int] | None = None
        if self.properties.is_file():
            self._ports = parse_ports(self.properties.read_text())
        self._atexit_registered = False

    # ------------------------------------------------------------ properties
    @property
    def port(self) -> int:
        """The client (PLAINTEXT) port; chosen at the first :meth:`start`."""
        if self._ports is None:
            raise BrokerError("the broker has no port yet: call start() first")
        return self._ports[0]

    @property
    def controller_port(self) -> int:
        """The KRaft controller port; chosen at the first :meth:`start`."""
        if self._ports is None:
            raise BrokerError("the broker has no port yet: call start() first")
        return self._ports[1]

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for clients: ``127.0.0.1:<port>``."""
        return f"{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def running(self) -> bool:
        """Whether the broker process started by this object is alive."""
        return self.pid is not None

    # ------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 90, *, detach: bool = False) -> LocalKafka:
        """Start the broker and wait until it answers a metadata request.

        The first start downloads the jars if needed (:func:`ensure_jars`),
        chooses two free ports and formats the storage; later starts reuse
        both. With ``detach`` the broker is left running when this Python
        process exits (what ``up`` does); otherwise it is killed at exit if
        still running. Raises :class:`BrokerError` with the end of the
        broker's log if it does not come up within ``timeout`` seconds.
        """
        if self.running():
            return self
        lib = ensure_jars(self.version)
        java = _need("java", f"to run the Kafka {self.version} broker")
        self.workdir.mkdir(parents=True, exist_ok=True)
        fresh = self._ports is None
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            if fresh:
                # Free when chosen, but another process may bind one before the
                # broker does: then choose again, on fresh storage.
                port, controller_port = _pick_ports(2)
                self._ports = (port, controller_port)
                if attempts:
                    shutil.rmtree(self.data_dir, ignore_errors=True)
            else:
                self._wait_ports_free(timeout=min(15.0, timeout))
            log_start = self.log_file.stat().st_size if self.log_file.is_file() else 0
            self._launch(java, lib, detach)
            attempts += 1
            try:
                self._wait_ready(max(deadline - time.monotonic(), 1.0))
            except BrokerError:
                self.stop(kill=True)
                if fresh and attempts < 3 and self._bind_failed(log_start):
                    continue
                raise
            except BaseException:
                self.stop(kill=True)
                raise
            return self

    def _bind_failed(self, log_start: int) -> bool:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(log_start)
                return b"Address already in use" in log.read()
        except OSError:
            return False

    def _launch(self, java: str, lib: Path, detach: bool) -> None:
        self.properties.write_text(
            render_server_properties(self.port, self.controller_port, self.data_dir)
        )
        self._log4j.write_text(_LOG4J2.format(log=self.log_file))
        base = [
            java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self._log4j}",
            # Kafka logs its own shutdown from its shutdown hook: log4j's hook
            # must not close the log first.
            "-Dlog4j2.shutdownHookEnabled=false",
            "-cp",
            f"{lib}/*",
        ]
        if not (self.data_dir / "meta.properties").is_file():
            self._format(base)
        with open(self.console_file, "ab") as console:
            self._proc = subprocess.Popen(
                [*base, "kafka.Kafka", str(self.properties)],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        if not detach and not self._atexit_registered:
            atexit.register(self._at_exit)
            self._atexit_registered = True

    def _format(self, base: list[str]) -> None:
        command = [
            *base,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.properties),
        ]
        done = _capture(command, timeout=120)
        with open(self.console_file, "a") as console:
            console.write(done.stdout)
        if done.returncode != 0:
            raise BrokerError(
                f"formatting the Kafka storage in {self.data_dir} failed "
                f"(exit code {done.returncode}):\n{_tail(done.stdout)}"
            )

    def _wait_ports_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            busy = [p for p in (self.port, self.controller_port) if not _port_free(p)]
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"can't restart the Kafka broker of {self.workdir}: port(s) "
                    f"{', '.join(map(str, busy))} on {_HOST} are still in use after {timeout:.0f} s"
                )
            time.sleep(0.25)

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:  # pragma: no cover - start() always sets it
            raise BrokerError("the broker was not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {code} while starting; "
                    f"{self.console_file}:\n{_tail_file(self.console_file, 10)}\n"
                    f"{self.log_file}:\n{_tail_file(self.log_file)}"
                )
            if _can_connect(self.port) and metadata_ok(self.bootstrap, timeout=2.0):
                return
            time.sleep(0.2)
        raise BrokerError(
            f"the Kafka broker at {self.bootstrap} did not answer within {timeout:.0f} s; "
            f"{self.log_file}:\n{_tail_file(self.log_file)}"
        )

    def stop(self, kill: bool = False, timeout: float = 30) -> None:
        """Stop the broker: SIGTERM (a clean shutdown), or SIGKILL with ``kill``.

        If it has not exited ``timeout`` seconds after SIGTERM it is killed.
        The ports and data stay, for a later :meth:`start`.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired as exc:
                    raise BrokerError(
                        f"the Kafka broker (pid {proc.pid}) did not exit even after SIGKILL"
                    ) from exc
        self._proc = None

    def close(self) -> None:
        """Stop the broker and remove its directory if this object created it."""
        try:
            self.stop()
        finally:
            if self._atexit_registered:
                atexit.unregister(self._at_exit)
                self._atexit_registered = False
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=10)

    def __enter__(self) -> LocalKafka:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.bootstrap if self._ports else "no ports yet"
        state = f"pid {self.pid}" if self.running() else "stopped"
        return f"LocalKafka({where}, {state}, workdir={str(self.workdir)!r})"


# ------------------------------------------------------------------ the CLI
_STATE = "state.json"


def _read_state(workdir: Path) -> dict | None:
    try:
        return json.loads((workdir / _STATE).read_text())
    except (OSError, ValueError):
        return None


def _live_broker(workdir: Path) -> dict | None:
    """The state of the broker running in ``workdir``, or None."""
    state = _read_state(workdir)
    if state is None:
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _is_broker(pid, workdir / "server.properties"):
        return None
    return state


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_up(workdir: Path, timeout: float) -> int:
    state = _live_broker(workdir)
    if state is not None:
        _say(f"a Kafka broker is already running in {workdir} (pid {state['pid']})")
        print(state["bootstrap"], flush=True)
        return 0
    ours = (workdir / _STATE).is_file() or (workdir / "server.properties").is_file()
    if workdir.is_dir() and any(workdir.iterdir()) and not ours:
        _say(f"error: {workdir} is not a local Kafka directory and not empty; choose another --dir")
        return 1
    _say(f"starting Kafka {KAFKA_VERSION} in {workdir} (the first run downloads its jars)")
    kafka = LocalKafka(workdir)
    started = time.monotonic()
    kafka.start(timeout=timeout, detach=True)
    state = {
        "pid": kafka.pid,
        "bootstrap": kafka.bootstrap,
        "port": kafka.port,
        "controller_port": kafka.controller_port,
        "version": kafka.version,
        "workdir": str(kafka.workdir),
    }
    (workdir / _STATE).write_text(json.dumps(state, indent=2) + "\n")
    _say(
        f"Kafka broker up in {time.monotonic() - started:.1f} s (pid {kafka.pid}); "
        f"log: {kafka.log_file}; stop it with: python -m cityvitals.localkafka down --dir {workdir}"
    )
    print(kafka.bootstrap, flush=True)
    return 0


def _cmd_status(workdir: Path) -> int:
    state = _live_broker(workdir)
    if state is None:
        _say(f"no Kafka broker is running in {workdir}")
        return 1
    if not metadata_ok(state["bootstrap"], timeout=5.0):
        _say(f"the Kafka broker in {workdir} (pid {state['pid']}) runs but does not answer")
        return 1
    _say(f"Kafka broker running in {workdir} (pid {state['pid']})")
    print(state["bootstrap"], flush=True)
    return 0


def _stop_pid(pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid):
                if time.monotonic() >= deadline:
                    raise BrokerError(f"the Kafka broker (pid {pid}) did not exit after SIGKILL")
                time.sleep(0.1)
            return
        time.sleep(0.1)


def _cmd_down(workdir: Path, timeout: float) -> int:
    ours = (workdir / _STATE).is_file() or (workdir / "server.properties").is_file()
    if not ours:
        _say(f"no Kafka broker is running in {workdir} (nothing to stop)")
        return 0
    state = _live_broker(workdir)
    if state is None:
        _say(f"no Kafka broker was running in {workdir}; removed its files")
    else:
        _stop_pid(state["pid"], timeout)
        _say(f"stopped the Kafka broker in {workdir} (pid {state['pid']}) and removed its files")
    shutil.rmtree(workdir)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cityvitals.localkafka up|down|status [--dir DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m cityvitals.localkafka",
        description=f"A local single-node Kafka {KAFKA_VERSION} broker (KRaft) on 127.0.0.1.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".kafka"),
        help="the broker's directory: config, data and logs (default: .kafka)",
    )
    parser.add_argument(
        "--timeout", type=float, default=90, help="seconds to wait for start or stop"
    )
    args = parser.parse_args(argv)
    workdir = args.dir.resolve()
    try:
        if args.command == "up":
            return _cmd_up(workdir, args.timeout)
        if args.command == "status":
            return _cmd_status(workdir)
        return _cmd_down(workdir, args.timeout)
    except BrokerError as exc:
        _say(f"error: {exc}")
        return 1
    except OSError as exc:
        _say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
