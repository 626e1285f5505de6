"""A server process run under the guard (``guard.py``), in its own process group, and stopped at
exit: what ``LocalKafka`` and ``LocalPostgres`` have in common."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

from tools.localinfra import guard
from tools.localinfra.processes import (
    LocalInfraError,
    group_members,
    kill_stale,
    log,
    signal_all,
)

_live: set[GuardedServer] = set()
_live_lock = threading.Lock()
_atexit_registered = False


def _stop_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _track(server: GuardedServer, live: bool) -> None:
    global _atexit_registered
    with _live_lock:
        if not live:
            _live.discard(server)
            return
        _live.add(server)
        if not _atexit_registered:
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True


class Startable(ABC):
    """Something started and stopped, also as a context manager."""

    @abstractmethod
    def start(self) -> Self:
        """Start (if not running) and return self."""

    @abstractmethod
    def stop(self) -> None:
        """Stop; idempotent."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()


class GuardedServer(Startable):
    """A server process run under the guard, in its own process group."""

    name = "server"
    title = "the server"  # for messages
    stop_signal: int = signal.SIGTERM
    stop_grace = 30.0

    def __init__(
        self, data_dir: Path | str, *, fast: bool, port: int | None, start_timeout: float
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.fast = fast
        self.port = port  # chosen at the first start, kept by restart()
        self.start_timeout = start_timeout
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

    def started_port(self) -> int:
        """The port the server listens on; LocalInfraError before its first start."""
        if self.port is None:
            raise LocalInfraError(f"{self.title} has not been started")
        return self.port

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
            kill_stale(self._stale_marker(), self.stop_signal, self.stop_grace)
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
                    log(f"{self.name} did not stop within {self.stop_grace}s: killing it")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(guard.pid, signal.SIGKILL)
                    guard.wait()
                leftovers = group_members(guard.pid)
                signal_all(leftovers, signal.SIGKILL)
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

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()  # not inheritable: only the guard gets read_end
        guard_cmd = [
            sys.executable, "-I", "-S", str(Path(guard.__file__).resolve()),
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
