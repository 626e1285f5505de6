"""A real single-node Apache Kafka (KRaft) and a private PostgreSQL, as local processes.

For tests and the local run mode on machines without a Docker engine: the broker runs from
Maven Central jars (``deploy/kafka/pom.xml``), PostgreSQL from the distribution's server binaries.
Both listen on free 127.0.0.1 ports and keep their files under a data folder you choose.

    with LocalInfra(Path("/tmp/tierline-dev")) as infra:
        infra.kafka_bootstrap    # "127.0.0.1:PORT"
        infra.database_url       # "postgresql://postgres@127.0.0.1:PORT/postgres"

    python -m tools.localinfra [--data-dir DIR]     # prints both and waits for Ctrl-C

No orphans. Each server runs under a small guard process (this file run with ``--guard``) in its
own process group:

* ``stop()`` (also at exit, via ``atexit``) sends the guard SIGTERM; the guard forwards the
  server's own graceful stop signal, and anything left after the grace period is SIGKILLed.
* If this process dies without running ``stop()`` (SIGKILL, default SIGTERM, ``os._exit``), the
  guard sees EOF on the pipe it holds to us and stops the server gracefully.
* If the guard itself is SIGKILLed, the kernel SIGKILLs the server: the guard sets
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the server's ``preexec_fn``.

Why the guard instead of setting PR_SET_PDEATHSIG on the server directly from here: the kernel
sends that signal when the *thread* that forked the child exits, not the process, so a server
started from a worker thread (``LocalInfra`` starts both concurrently) would be killed as soon as
that thread finished; and ``preexec_fn`` is unsafe in a multi-threaded parent. The guard is
single-threaded and lives exactly as long as its server, so neither problem arises there.

PostgreSQL runs in the foreground under its guard (not daemonised by ``pg_ctl``), so it is covered
by the same rules. ``initdb`` and ``postgres`` refuse to run as root: when root, both run as
``nobody``, which must be able to reach the data folder (use one under /tmp).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
HOST = "127.0.0.1"
PG_UNPRIVILEGED_USER = "nobody"

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class LocalInfraError(RuntimeError):
    """A local server could not be fetched, started or stopped."""


def _log(message: str) -> None:
    print(f"localinfra: {message}", file=sys.stderr, flush=True)


# --- Kafka jars --------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``${TIERLINE_CACHE_DIR:-~/.cache/tierline}``."""
    return Path(os.environ.get("TIERLINE_CACHE_DIR") or "~/.cache/tierline").expanduser()


def kafka_version(pom: Path = KAFKA_POM) -> str:
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if match is None:
        raise LocalInfraError(f"no <kafka.version> property in {pom}")
    return match.group(1)


def kafka_jars_dir(pom: Path = KAFKA_POM) -> Path:
    """The broker's runtime jars, fetched once with Maven into the cache dir.

    A marker holding the pom's hash is written only after a complete fetch, so an interrupted
    fetch (or an edited pom) is fetched again. A file lock serialises concurrent callers.
    """
    home = cache_dir() / f"kafka-{kafka_version(pom)}"
    lib, marker = home / "lib", home / "lib.ok"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()

    def fetched() -> bool:
        return lib.is_dir() and marker.is_file() and marker.read_text().strip() == digest

    if fetched():
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fetched():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalInfraError("Maven (mvn) is not on PATH: it fetches the Kafka jars")
        partial = home / f"lib.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        _log(f"fetching the Kafka jars with Maven into {lib} (the first time takes a minute)")
        began = time.monotonic()
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            raise LocalInfraError(f"Maven could not fetch the Kafka jars:\n{result.stdout[-4000:]}")
        marker.unlink(missing_ok=True)
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        marker.write_text(digest + "\n")
        _log(f"fetched {sum(1 for _ in lib.glob('*.jar'))} jars in {time.monotonic() - began:.1f}s")
    return lib


# --- process helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (all held open at once so the kernel cannot hand one out twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (PID 1 may be slow to reap orphans)."""
    if not Path("/proc").is_dir():  # not Linux
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _live_pids() -> Iterator[int]:
    if not Path("/proc").is_dir():
        return
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and pid_alive(int(entry.name)):
            yield int(entry.name)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for pid in _live_pids():
        stat = _proc_stat(pid)
        if stat is not None and int(stat[2]) == pgid:
            members.append(pid)
    return members


def _pids_with_arg(arg: str) -> list[int]:
    """Live processes one of whose command-line arguments is exactly ``arg``."""
    wanted = os.fsencode(arg)
    found = []
    for pid in _live_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv:
            found.append(pid)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _kill_stale(arg: str, stop_signal: int, grace: float) -> None:
    """Stop servers left over from an earlier run that used the same data folder."""
    stale = _pids_with_arg(arg)
    if not stale:
        return
    _log(f"stopping leftover processes {stale} that use {arg}")
    _signal_all(stale, stop_signal)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in stale):
        time.sleep(0.1)
    _signal_all([pid for pid in stale if pid_alive(pid)], signal.SIGKILL)


def _tail(path: Path, lines: int = 40, offset: int = 0) -> str:
    """The last lines of a log, after its first ERROR/FATAL lines (the cause, usually)."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            text = file.read().decode(errors="replace").splitlines()
    except OSError:
        return f"({path} does not exist)"
    errors: list[str] = []  # each ERROR/FATAL line and the exception message under it
    for i, line in enumerate(text):
        if len(errors) < 20 and re.search(r"\b(ERROR|FATAL)\b", line):
            errors.append(line)
            following = text[i + 1] if i + 1 < len(text) else ""
            if following and not following.startswith("["):
                errors.append(following)
    first_errors = f"--- {path} (first errors) ---\n" + "\n".join(errors) + "\n" if errors else ""
    return f"{first_errors}--- {path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])


def _set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) exits."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _user_ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise LocalInfraError(f"user {user!r} does not exist") from None
    return entry.pw_uid, entry.pw_gid


# --- the guard ---------------------------------------------------------------------------------


def _guard_main(argv: list[str]) -> int:
    """Run one server as a child and stop it when asked or when our parent goes away.

    stdin is the read end of a pipe whose write end only the parent holds: EOF means the parent
    is gone. SIGTERM/SIGINT/SIGHUP mean "stop". Either way the server gets ``--stop-signal`` and,
    after ``--grace`` seconds, SIGKILL. The server gets PR_SET_PDEATHSIG=SIGKILL, so it cannot
    outlive the guard either. Exits with the server's status.
    """
    parser = argparse.ArgumentParser(prog="localinfra --guard")
    parser.add_argument("--stop-signal", type=int, default=int(signal.SIGTERM))
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--user")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command

    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)

    guard_pid = os.getpid()

    def in_child() -> None:  # runs between fork and exec; the guard has a single thread
        _set_pdeathsig(signal.SIGKILL)
        if os.getppid() != guard_pid:  # the guard died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    uid = gid = None
    if args.user:
        uid, gid = _user_ids(args.user)
    server = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, preexec_fn=in_child,
        user=uid, group=gid, extra_groups=[] if uid is not None else None,
    )  # fmt: skip
    args.pidfile.write_text(f"{server.pid}\n")

    parent_gone = False
    deadline: float | None = None
    while True:
        status = server.poll()
        if status is not None:
            return status if status >= 0 else 128 - status
        if deadline is None and (stop_requested or parent_gone):
            server.send_signal(args.stop_signal)
            deadline = time.monotonic() + args.grace
        elif deadline is not None and time.monotonic() > deadline:
            server.kill()
            deadline = float("inf")
        if parent_gone:
            time.sleep(0.1)
        elif select.select([0], [], [], 0.2)[0] and not os.read(0, 1):
            parent_gone = True


# --- servers -----------------------------------------------------------------------------------

_live: set[_GuardedServer] = set()
_live_lock = threading.Lock()
_atexit_registered = False


def _stop_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _track(server: _GuardedServer, live: bool) -> None:
    global _atexit_registered
    with _live_lock:
        if not live:
            _live.discard(server)
            return
        _live.add(server)
        if not _atexit_registered:
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True


class _GuardedServer(ABC):
    """A server process run under the guard, in its own process group."""

    name = "server"
    stop_signal: int = signal.SIGTERM
    stop_grace = 30.0
    start_timeout = 120.0

    def __init__(self, data_dir: Path | str, *, fast: bool, port: int | None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.fast = fast
        self.port = port  # chosen at the first start, kept by restart()
        self._guard: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None  # write end of the guard's stdin; closing it stops it
        self._lock = threading.RLock()
        self._abort = threading.Event()

    # what a subclass provides

    @abstractmethod
    def _prepare(self) -> None:
        """Pick ports, write config, initialise the data folder (once)."""

    @abstractmethod
    def _command(self) -> list[str]:
        """The server's command line (run in the foreground under the guard)."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """True once the server serves clients."""

    @abstractmethod
    def _diagnostics(self) -> str:
        """The end of the server's logs, for error messages."""

    @abstractmethod
    def _stale_marker(self) -> str:
        """A command-line argument only this data folder's server (and its guard) has."""

    def _run_as(self) -> str | None:
        return None

    # common behaviour

    @property
    def pid_file(self) -> Path:
        """Where the guard writes the server's pid."""
        return self.data_dir / f"{self.name}.pid"

    @property
    def guard_out(self) -> Path:
        """The server's stdout and stderr, and the guard's."""
        return self.data_dir / f"{self.name}.out"

    @property
    def running(self) -> bool:
        return self._guard is not None and self._guard.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        if not self.running:
            return None
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    @property
    def guard_pid(self) -> int | None:
        """The guard's pid, also the id of the process group holding the server."""
        return self._guard.pid if self._guard is not None and self.running else None

    def start(self) -> Self:
        """Start the server and wait until it serves. Does nothing if it already runs."""
        with self._lock:
            if self.running:
                return self
            self._abort.clear()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _kill_stale(self._stale_marker(), self.stop_signal, self.stop_grace)
            self._prepare()
            self.pid_file.unlink(missing_ok=True)
            self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server gracefully, SIGKILL it after the grace period. Idempotent."""
        self._abort.set()
        with self._lock:
            guard, self._guard = self._guard, None
            if guard is not None:
                if guard.poll() is None:
                    guard.send_signal(signal.SIGTERM)
                try:
                    guard.wait(self.stop_grace + 5)
                except subprocess.TimeoutExpired:
                    _log(f"{self.name} did not stop within {self.stop_grace}s: killing it")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(guard.pid, signal.SIGKILL)
                    guard.wait()
                leftovers = group_members(guard.pid)
                _signal_all(leftovers, signal.SIGKILL)
            if self._pipe is not None:
                os.close(self._pipe)
                self._pipe = None
            _track(self, live=False)

    def restart(self) -> Self:
        """Stop and start again on the same ports and data (for fault injection)."""
        with self._lock:
            if self.port is None:
                raise LocalInfraError(f"{self.name} was never started: nothing to restart")
            self.stop()
            return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()  # not inheritable: only the guard gets read_end
        guard_cmd = [
            sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--guard",
            "--stop-signal", str(int(self.stop_signal)), "--grace", str(self.stop_grace),
            "--pidfile", str(self.pid_file),
        ]  # fmt: skip
        user = self._run_as()
        if user is not None:
            guard_cmd += ["--user", user]
        guard_cmd += ["--", *self._command()]
        try:
            with open(self.guard_out, "ab") as out:
                self._guard = subprocess.Popen(
                    guard_cmd, stdin=read_end, stdout=out, stderr=subprocess.STDOUT,
                    cwd=self.data_dir, start_new_session=True,
                )  # fmt: skip
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._pipe = write_end
        _track(self, live=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self._is_ready():
            if self._abort.is_set():
                raise LocalInfraError(f"{self.name} start was interrupted by stop()")
            if not self.running:
                raise LocalInfraError(f"{self.name} exited while starting\n{self._diagnostics()}")
            if time.monotonic() > deadline:
                raise LocalInfraError(
                    f"{self.name} not ready after {self.start_timeout:.0f}s\n{self._diagnostics()}"
                )
            time.sleep(0.05)


class LocalKafka(_GuardedServer):
    """A single-node Apache Kafka 4.1 broker+controller (KRaft) on free 127.0.0.1 ports.

    ``fast=True`` (tests only) limits the JIT to C1, which starts the broker about a second
    sooner but lowers its peak throughput: never benchmark with it.
    """

    name = "kafka"
    stop_signal = signal.SIGTERM  # the JVM's shutdown hook closes the logs cleanly
    stop_grace = 30.0

    def __init__(
        self,
        data_dir: Path | str,
        *,
        fast: bool = False,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        jars_dir: Path | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__(data_dir, fast=fast, port=port)
        self.controller_port = controller_port
        self.heap = heap
        self.jars_dir = jars_dir
        self.start_timeout = start_timeout
        self._java = ""
        self._log_offset = 0

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise LocalInfraError("Kafka has not been started")
        return f"{HOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs``: the topics' data and the KRaft metadata log."""
        return self.data_dir / "data"

    @property
    def server_log(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    def _stale_marker(self) -> str:
        return str(self.config_file)

    def _prepare(self) -> None:
        if self.jars_dir is None:
            self.jars_dir = kafka_jars_dir()
        self._java = _java()
        if self.port is None or self.controller_port is None:
            self.port, self.controller_port = _free_ports(2)
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._server_properties())
        (self.data_dir / "log4j2.properties").write_text(_KAFKA_LOG4J2)
        if not (self.log_dir / "meta.properties").exists():
            self._format()
        self._log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0

    def _server_properties(self) -> str:
        return (
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.voters=1@{HOST}:{self.controller_port}\n"
            f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}\n"
            f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            f"log.dirs={self.log_dir}\n"
            "offsets.topic.replication.factor=1\n"
            "offsets.topic.num.partitions=1\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            "group.initial.rebalance.delay.ms=0\n"
            "auto.create.topics.enable=false\n"
            "num.partitions=6\n"
        )

    def _format(self) -> None:
        """Format the log dir for a new cluster (with static voters no --standalone is needed)."""
        result = subprocess.run(
            [self._java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", self._classpath(),
             "kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id(),
             "-c", str(self.config_file), "--ignore-formatted"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LocalInfraError(f"formatting {self.log_dir} failed:\n{result.stdout[-4000:]}")

    def _classpath(self) -> str:
        return f"{self.jars_dir}/*"

    def _command(self) -> list[str]:
        jit = ["-XX:TieredStopAtLevel=1"] if self.fast else []
        return [
            self._java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true", *jit,
            f"-Dkafka.logs.dir={self.server_log.parent}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", self._classpath(), "kafka.Kafka", str(self.config_file),
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        assert self.port is not None
        try:
            with open(self.server_log, "rb") as log:
                log.seek(self._log_offset)
                started = b"Kafka Server started" in log.read()
        except OSError:
            return False
        return started and port_open(self.port)

    def _diagnostics(self) -> str:
        return (
            f"{_tail(self.server_log, offset=self._log_offset)}\n{_tail(self.guard_out, lines=20)}"
        )


_KAFKA_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _kafka_cluster_id() -> str:
    """What ``kafka-storage.sh random-uuid`` prints, without starting a JVM for it."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka avoids ids that look like CLI options
            return cluster_id


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise LocalInfraError("java is not installed: Kafka 4.1 needs Java 17 or newer")
    return java


def postgres_bin_dir() -> Path:
    """PostgreSQL's server binaries: the highest /usr/lib/postgresql/*/bin, else pg_config's."""
    versions = sorted(
        (int(bindir.parent.name), bindir)
        for bindir in Path("/usr/lib/postgresql").glob("*/bin")
        if bindir.parent.name.isdigit() and (bindir / "postgres").exists()
    )
    if versions:
        return versions[-1][1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        bindir = Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip())
        if (bindir / "postgres").exists():
            return bindir
    raise LocalInfraError(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin or via pg_config: "
        "install them (apt-get install -y postgresql)"
    )


class LocalPostgres(_GuardedServer):
    """A private PostgreSQL cluster on a free 127.0.0.1 port, user ``postgres``, trust auth.

    ``fast=True`` (tests only) turns off fsync, synchronous_commit and full_page_writes: a crash
    of the machine can corrupt the cluster. Never in the run mode.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown, what `pg_ctl -m fast stop` sends
    stop_grace = 30.0

    def __init__(
        self,
        data_dir: Path | str,
        *,
        fast: bool = False,
        port: int | None = None,
        bin_dir: Path | None = None,
        max_connections: int = 200,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(data_dir, fast=fast, port=port)
        self.bin_dir = bin_dir
        self.max_connections = max_connections
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        if self.port is None:
            raise LocalInfraError("PostgreSQL has not been started")
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    @property
    def postmaster_pid_file(self) -> Path:
        """PostgreSQL's own lock file; its first line is the postmaster's pid."""
        return self.pgdata / "postmaster.pid"

    @property
    def server_log(self) -> Path:
        return self.guard_out

    def _stale_marker(self) -> str:
        return str(self.pgdata)

    def _run_as(self) -> str | None:
        return PG_UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def _prepare(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = postgres_bin_dir()
        if self.port is None:
            self.port = free_port()
        user = self._run_as()
        if user is not None:
            uid, gid = _user_ids(user)
            os.chown(self.data_dir, uid, gid)
            self._check_writable_by(user)
        # No server of ours uses this folder (stale ones were stopped): a lock file left by a
        # killed postmaster whose pid now belongs to another process would block the start.
        self.postmaster_pid_file.unlink(missing_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _check_writable_by(self, user: str) -> None:
        uid, gid = _user_ids(user)
        probe = subprocess.run(
            ["test", "-w", str(self.data_dir), "-a", "-x", str(self.data_dir)],
            user=uid, group=gid, extra_groups=[], check=False,
        )  # fmt: skip
        if probe.returncode != 0:
            raise LocalInfraError(
                f"PostgreSQL refuses to run as root, so it runs as {user!r}, who cannot reach "
                f"{self.data_dir}: every parent folder needs o+x. Use a data folder under /tmp."
            )

    def _initdb(self) -> None:
        assert self.bin_dir is not None
        shutil.rmtree(self.pgdata, ignore_errors=True)  # a half-made cluster from a crash
        command = [
            str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C",
        ]  # fmt: skip
        if self.fast:
            command.append("--no-sync")
        user = self._run_as()
        uid, gid = _user_ids(user) if user is not None else (None, None)
        result = subprocess.run(
            command, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False,
            user=uid, group=gid, extra_groups=[] if uid is not None else None,
        )  # fmt: skip
        if result.returncode != 0:
            raise LocalInfraError(f"initdb failed:\n{result.stdout[-4000:]}")

    def _command(self) -> list[str]:
        assert self.bin_dir is not None
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": "",  # TCP only: no socket path-length or permission woes
            "max_connections": str(self.max_connections),
            # A write-heavy ledger: room for a million items' rows and indexes in memory, and
            # checkpoints far enough apart that each page's first change after one (a full page
            # image in the WAL) is rare. Durability is unchanged.
            "shared_buffers": "512MB",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "15min",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        command = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _is_ready(self) -> bool:
        assert self.port is not None
        try:
            lines = self.postmaster_pid_file.read_text().splitlines()
        except OSError:
            return False
        # Line 8 is the postmaster's status (PostgreSQL 10+); line 1 its pid.
        return (
            len(lines) >= 8
            and lines[0].strip() == str(self.pid)
            and lines[7].strip() == "ready"
            and port_open(self.port)
        )

    def _diagnostics(self) -> str:
        return _tail(self.server_log)


class LocalInfra:
    """Kafka and PostgreSQL for one test session or one local run, under ``data_dir``.

    ``start()`` starts, concurrently, whichever of the enabled servers is not running yet;
    ``stop()`` stops both. ``kafka`` and ``postgres`` can also be started one by one (lazily).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        kafka: bool = True,
        postgres: bool = True,
        fast: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.kafka = LocalKafka(self.data_dir / "kafka", fast=fast)
        self.postgres = LocalPostgres(self.data_dir / "postgres", fast=fast)
        self._enabled: list[_GuardedServer] = [
            server for server, wanted in ((self.kafka, kafka), (self.postgres, postgres)) if wanted
        ]

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def start(self) -> Self:
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o755, parents=True)  # postgres (as nobody) must reach it
        missing = [server for server in self._enabled if not server.running]
        if len(missing) == 1:
            missing[0].start()
        elif missing:
            with ThreadPoolExecutor(len(missing), thread_name_prefix="localinfra") as pool:
                futures = [pool.submit(server.start) for server in missing]
                try:
                    errors = [future.exception() for future in futures]
                except BaseException:  # Ctrl-C while waiting: stop() aborts the waits
                    self.stop()
                    raise
            first_error = next((error for error in errors if error is not None), None)
            if first_error is not None:
                self.stop()
                raise first_error
        return self

    def stop(self) -> None:
        for server in (self.kafka, self.postgres):
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()


# --- command line ------------------------------------------------------------------------------


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--guard"]:
        return _guard_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m tools.localinfra",
        description="Run a real Kafka broker and PostgreSQL locally until Ctrl-C.",
    )
    parser.add_argument(
        "--data-dir", type=Path,
        help="keep the data here (reused next time); default: a temp dir removed at exit",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_keyboard_interrupt)

    with contextlib.ExitStack() as stack:
        data_dir: Path = args.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="tierline-localinfra-"))
        )
        if args.data_dir is None:
            data_dir.chmod(0o755)  # postgres runs as nobody when we are root
        try:
            began = time.monotonic()
            infra = stack.enter_context(LocalInfra(data_dir))
            _log(f"started in {time.monotonic() - began:.1f}s; data in {data_dir}")
            print(f"KAFKA_BOOTSTRAP_SERVERS={infra.kafka_bootstrap}", flush=True)
            print(f"DATABASE_URL={infra.database_url}", flush=True)
            _log("running: Ctrl-C to stop")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            _log("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
