"""A private PostgreSQL cluster from the distribution's server binaries (``initdb``, then
``postgres`` in the foreground under the guard, not daemonised by ``pg_ctl``).

``initdb`` and ``postgres`` refuse to run as root: when root, both run as ``nobody``, which must
be able to reach the data folder (use one under /tmp).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tools.localinfra.guard import as_user, user_ids
from tools.localinfra.processes import HOST, LocalInfraError, free_port, port_open, tail
from tools.localinfra.server import GuardedServer

PG_UNPRIVILEGED_USER = "nobody"


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


class LocalPostgres(GuardedServer):
    """A private PostgreSQL cluster on a free 127.0.0.1 port, user ``postgres``, trust auth.

    ``fast=True`` (tests only) turns off fsync, synchronous_commit and full_page_writes: a crash
    of the machine can corrupt the cluster. Never in the run mode.
    """

    name = "postgres"
    title = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast" shutdown, what `pg_ctl -m fast stop` sends

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
        super().__init__(data_dir, fast=fast, port=port, start_timeout=start_timeout)
        self.bin_dir = bin_dir
        self.max_connections = max_connections
        self.pgdata = self.data_dir / "data"
        # PostgreSQL's own lock file; its first line is the postmaster's pid.
        self.postmaster_pid_file = self.pgdata / "postmaster.pid"
        self.server_log = self.guard_out  # postgres logs to its stderr

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.started_port()}/postgres"

    def _stale_marker(self) -> str:
        return str(self.pgdata)

    def _run_as(self) -> str | None:
        return PG_UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def _prepare(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = postgres_bin_dir()
        if self.port is None:
            self.port = free_port()
        ids = self._run_as_ids()
        if ids is not None:
            os.chown(self.data_dir, *ids)
            self._check_writable_by(ids)
        # No server of ours uses this folder (stale ones were stopped): a lock file left by a
        # killed postmaster whose pid now belongs to another process would block the start.
        self.postmaster_pid_file.unlink(missing_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _run_as_ids(self) -> tuple[int, int] | None:
        """(uid, gid) of ``_run_as()``'s user, or None to run as ourselves."""
        user = self._run_as()
        if user is None:
            return None
        try:
            return user_ids(user)
        except LookupError as error:
            raise LocalInfraError(str(error)) from None

    def _check_writable_by(self, ids: tuple[int, int]) -> None:
        probe = subprocess.run(
            ["test", "-w", str(self.data_dir), "-a", "-x", str(self.data_dir)],
            check=False, **as_user(ids),
        )  # fmt: skip
        if probe.returncode != 0:
            raise LocalInfraError(
                f"PostgreSQL refuses to run as root, so it runs as {self._run_as()!r}, who cannot "
                f"reach {self.data_dir}: every parent folder needs o+x. "
                "Use a data folder under /tmp."
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
        result = subprocess.run(
            command, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False, **as_user(self._run_as_ids()),
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
            # The WAL (about 800 bytes per metered item) written past the page cache: a single
            # server that no standby streams from needs only `minimal` WAL, and then an
            # `open_datasync` log is opened O_DIRECT. Through the page cache, a million items
            # grew it by 800 MB of fresh pages and PostgreSQL's CPU per item by half again.
            # A new WAL segment is not zero-filled first: 16 MB written in the committing
            # backend, the p99 of metering's batches went from 50 ms to 220 ms at each.
            # Both are crash-safe: every commit is still flushed before it is acknowledged.
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "wal_sync_method": "open_datasync",
            "wal_init_zero": "off",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        command = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _is_ready(self) -> bool:
        try:
            lines = self.postmaster_pid_file.read_text().splitlines()
        except OSError:
            return False
        # Line 8 is the postmaster's status (PostgreSQL 10+); line 1 its pid.
        return (
            len(lines) >= 8
            and lines[0].strip() == str(self.pid)
            and lines[7].strip() == "ready"
            and port_open(self.started_port())
        )

    def _diagnostics(self) -> str:
        return tail(self.server_log)
