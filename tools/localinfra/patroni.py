"""PostgreSQL with failover: two Patroni-managed nodes and etcd, on loopback ports.

The same model CloudNativePG runs on Kubernetes: one primary, one synchronous standby, a store
that holds the leader lock (etcd here, the API server there), and clients that find the primary
themselves with a multi-host DSN and ``target_session_attrs=read-write``. With
``synchronous_mode`` a commit is acknowledged only once the standby has it, so a failover loses
no acknowledged transaction; a commit whose acknowledgement was lost may or may not have made it,
and the services' retries must make either outcome count once.

``kill_primary()`` SIGKILLs the leader's postmaster. With ``primary_start_timeout: 0`` Patroni
then gives up the leader lock at once instead of restarting PostgreSQL in place, the standby
takes over, and the old primary comes back as a standby by itself (``pg_rewind``), so a test
can fail over back and forth. ``kill_primary(node=True)`` also SIGKILLs that node's Patroni (a
machine gone): the lock then expires after ``ttl`` and the node stays down until ``start()``ed.

Patroni runs from this virtual environment's packages (requirements.lock). When we are root
it runs as ``nobody`` (PostgreSQL refuses root), under a Python ``nobody`` can execute: ours,
or else the system's interpreter of the same version with our packages on its path.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml
from packaging.requirements import Requirement

from tools.localinfra.etcd import LocalEtcd
from tools.localinfra.guard import as_user, user_ids
from tools.localinfra.postgres import PG_UNPRIVILEGED_USER, postgres_bin_dir
from tools.localinfra.processes import (
    HOST,
    LocalInfraError,
    free_ports,
    log,
    pid_alive,
    port_open,
    tail,
)
from tools.localinfra.server import GuardedServer, Startable

#: Leader lock's lifetime and Patroni's loop: Patroni's minimums, so a lost node is noticed soon.
TTL_SECONDS = 20
LOOP_WAIT_SECONDS = 1
RETRY_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Member:
    """One node as Patroni's ``GET /cluster`` reports it."""

    name: str
    role: str  # "leader", "sync_standby", "replica"
    state: str  # "running", "streaming", "starting", "stopped", ...
    timeline: int | None
    port: int


def _run_as() -> str | None:
    return PG_UNPRIVILEGED_USER if os.geteuid() == 0 else None


def _reachable_by(ids: tuple[int, int] | None, *paths: Path) -> bool:
    """Whether the user ``ids`` (None: ourselves) can read and execute every one of ``paths``."""
    if ids is None:
        return True
    for path in paths:
        probe = subprocess.run(
            ["test", "-r", str(path), "-a", "-x", str(path)], check=False, **as_user(ids)
        )
        if probe.returncode != 0:
            return False
    return True


def patroni_python(ids: tuple[int, int] | None, spare: Path) -> tuple[list[str], dict[str, str]]:
    """The command prefix that runs Patroni from our packages as ``ids``, and its environment.

    Our interpreter when that user can run it; else (a pyenv under /root, say) the system's
    python of the same version, with our site-packages alone on its path: the same pinned
    packages, compiled for the same version. If that user cannot read our site-packages either
    (a checkout under /root), Patroni's packages are copied to ``spare`` (a folder it can read).
    """
    site = Path(sysconfig.get_paths()["purelib"])
    ours = Path(sys.executable)
    if _reachable_by(ids, ours, site):
        return [str(ours), "-s", "-m", "patroni"], {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/bin:/usr/local/bin")
    if system is None or not _reachable_by(ids, Path(system)):
        raise LocalInfraError(
            f"Patroni must run as {_run_as()!r} (PostgreSQL refuses root), who can run neither "
            f"{ours} nor a system {version}: install {version} (apt-get install -y python3)"
        )
    if not _reachable_by(ids, site):
        site = copy_distributions(site, spare, "patroni", extras={"etcd3", "psycopg3"})
    # -S: none of the system's own packages (Debian's dist-packages) on the path. One of them
    # would be imported wherever ours lack a module (python-etcd tries pyOpenSSL), built against
    # other versions than our pinned ones (Debian's pyOpenSSL fails on our cryptography).
    return [system, "-S", "-m", "patroni"], {"PYTHONPATH": str(site)}


def copy_distributions(site: Path, target: Path, name: str, *, extras: set[str]) -> Path:
    """Copy the installed distribution ``name`` (with ``extras``) and everything it requires
    from ``site`` into ``target``, once; ``target``."""
    if (target / ".complete").exists():
        return target
    wanted, seen = [(name, extras)], set[str]()
    while wanted:
        project, wanted_extras = wanted.pop()
        try:
            dist = importlib.metadata.distribution(project)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        seen.add(key)
        for file in dist.files or ():
            source = Path(str(dist.locate_file(file)))
            if source.is_file() and source.is_relative_to(site):
                copy = target / source.relative_to(site)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)
        for text in dist.requires or ():
            requirement = Requirement(text)
            contexts = [{"extra": extra} for extra in wanted_extras] or [{"extra": ""}]
            if requirement.marker is None or any(
                requirement.marker.evaluate(context) for context in contexts
            ):
                wanted.append((requirement.name, set(requirement.extras)))
    (target / ".complete").touch()
    return target


class PatroniNode(GuardedServer):
    """One Patroni agent and the PostgreSQL it manages, on fixed loopback ports."""

    name = "patroni"
    title = "Patroni"
    stop_signal = signal.SIGTERM  # Patroni stops PostgreSQL (fast) and releases its lock
    stop_grace = 60.0

    def __init__(
        self,
        data_dir: Path,
        *,
        node_name: str,
        scope: str,
        etcd: LocalEtcd,
        port: int,
        rest_port: int,
        fast: bool,
        max_connections: int,
        start_timeout: float,
    ) -> None:
        super().__init__(data_dir, fast=fast, port=port, start_timeout=start_timeout)
        self.node_name = node_name
        self.scope = scope
        self.etcd = etcd
        self.rest_port = rest_port
        self.max_connections = max_connections
        self.pgdata = self.data_dir / "data"
        self.config_file = self.data_dir / "patroni.yml"

    @property
    def url(self) -> str:
        """This node alone (whatever its role now)."""
        return f"postgresql://postgres@{HOST}:{self.started_port()}/postgres"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from PostgreSQL's own lock file."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0].strip())
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) and self._is_our_postmaster(pid) else None

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return any(os.fsencode(str(self.pgdata)) in arg for arg in argv)

    def kill_postmaster(self) -> int:
        """SIGKILL this node's postmaster; its pid."""
        pid = self.postmaster_pid()
        if pid is None:
            raise LocalInfraError(f"{self.node_name}: no postmaster is running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill(self) -> None:
        """SIGKILL Patroni and its postmaster (the node is gone until ``start()``)."""
        pid = self.postmaster_pid()
        guard = self.guard_pid
        if guard is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(guard, signal.SIGKILL)  # the guard and Patroni
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.stop()

    def stop(self) -> None:
        """Stop Patroni, which stops PostgreSQL; a postmaster it left (it runs in a session of
        its own, so it outlives a killed Patroni) is stopped too."""
        super().stop()
        self._stop_orphan_postmaster()

    def _stop_orphan_postmaster(self) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _stale_marker(self) -> str:
        return str(self.config_file)

    def _run_as(self) -> str | None:
        return _run_as()

    def _prepare(self) -> None:
        self._stop_orphan_postmaster()
        ids = user_ids(user) if (user := self._run_as()) is not None else None
        if ids is not None:
            os.chown(self.data_dir, *ids)
        self.config_file.write_text(yaml.safe_dump(self._config(), sort_keys=False))

    def _config(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "max_connections": self.max_connections,
            "unix_socket_directories": "",  # TCP only, as LocalPostgres
            "shared_buffers": "256MB",
            "max_wal_size": "2GB",
            # pg_rewind (a demoted primary rejoining) needs hint bits in the WAL.
            "wal_log_hints": "on",
            "wal_keep_size": "512MB",
        }
        if self.fast:  # an fsync only matters if the machine dies; full pages stay for pg_rewind
            parameters["fsync"] = "off"
        local = f"{HOST}:{self.port}"
        return {
            "scope": self.scope,
            "name": self.node_name,
            "log": {"level": "WARNING"},
            "restapi": {
                "listen": f"{HOST}:{self.rest_port}",
                "connect_address": f"{HOST}:{self.rest_port}",
            },
            "etcd3": {"hosts": [self.etcd.endpoint]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_SECONDS,
                    "loop_wait": LOOP_WAIT_SECONDS,
                    "retry_timeout": RETRY_TIMEOUT_SECONDS,
                    # A crashed primary is failed over at once, not restarted in place.
                    "primary_start_timeout": 0,
                    # A commit returns once the standby has flushed it: no acknowledged
                    # transaction is lost in a failover. Not strict: with the standby gone the
                    # primary goes on alone (writes never stall on a dead standby).
                    "synchronous_mode": True,
                    "synchronous_mode_strict": False,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {"wal_level": "replica", "hot_standby": "on"},
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": local,
                "connect_address": local,
                "data_dir": str(self.pgdata),
                "bin_dir": str(postgres_bin_dir()),
                "pgpass": str(self.data_dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                    "rewind": {"username": "postgres"},
                },
                "pg_hba": [
                    f"host all all {HOST}/32 trust",
                    f"host replication all {HOST}/32 trust",
                ],
                "parameters": parameters,
                # A diverged old primary that pg_rewind cannot fix is made anew from the leader.
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
            },
            "tags": {"nofailover": False, "noloadbalance": False},
        }

    def _command(self) -> list[str]:
        ids = user_ids(user) if (user := self._run_as()) is not None else None
        python, env = patroni_python(ids, self.data_dir.parent / "site-packages")
        # HOME: libpq and Patroni look for dot-files there, and root's is not ours to read.
        variables = [f"{key}={value}" for key, value in {**env, "HOME": str(self.data_dir)}.items()]
        return ["/usr/bin/env", *variables, *python, str(self.config_file)]

    def _is_ready(self) -> bool:
        return self.rest("/health") is not None and port_open(self.started_port())

    def rest(self, path: str) -> dict[str, Any] | None:
        """Patroni's REST API's answer to GET ``path`` if it is 200, else None."""
        try:
            with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=2) as answer:
                body: dict[str, Any] = json.loads(answer.read() or b"{}")
                return body
        except (OSError, ValueError, urllib.error.HTTPError):
            return None

    def _diagnostics(self) -> str:
        return tail(self.guard_out)


class LocalPatroniCluster(Startable):
    """etcd and ``nodes`` Patroni-managed PostgreSQL nodes under ``data_dir``, loopback only.

    ``url`` names every node with ``target_session_attrs=read-write``: a client connects to
    whichever is the primary now.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        nodes: int = 2,
        fast: bool = False,
        scope: str = "tierline",
        max_connections: int = 200,
        start_timeout: float = 120.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.etcd = LocalEtcd(self.data_dir / "etcd")
        ports = free_ports(2 * nodes)
        self.nodes = [
            PatroniNode(
                self.data_dir / f"node{n + 1}",
                node_name=f"node{n + 1}",
                scope=scope,
                etcd=self.etcd,
                port=ports[2 * n],
                rest_port=ports[2 * n + 1],
                fast=fast,
                max_connections=max_connections,
                start_timeout=start_timeout,
            )
            for n in range(nodes)
        ]
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{node.started_port()}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    @property
    def running(self) -> bool:
        return self.etcd.running and all(node.running for node in self.nodes)

    def start(self) -> Self:
        """etcd, then the first node (it initialises the cluster and leads), then the others;
        returns once a leader runs and every other node streams from it."""
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o755, parents=True)  # nobody must reach the nodes' folders
        try:
            self.etcd.start()
            first, *others = self.nodes
            first.start()
            for node in others:
                node.start()
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """The standbys first (stopping the leader first would fail over to them), then etcd."""
        leader = self._leader_name()
        for node in sorted(self.nodes, key=lambda node: node.node_name == leader):
            node.stop()
        self.etcd.stop()

    def members(self) -> list[Member]:
        """The cluster as the first node that answers sees it (empty if none answers)."""
        for node in self.nodes:
            cluster = node.rest("/cluster") if node.running else None
            if cluster is not None:
                return [
                    Member(
                        name=m["name"],
                        role=m["role"],
                        state=m["state"],
                        timeline=m.get("timeline"),
                        port=int(m["port"]),
                    )
                    for m in cluster.get("members", [])
                ]
        return []

    def _leader_name(self) -> str | None:
        leaders = [m for m in self.members() if m.role == "leader" and m.state == "running"]
        return leaders[0].name if leaders else None

    def primary(self) -> PatroniNode:
        """The node that holds the leader lock and runs as primary now."""
        name = self._leader_name()
        if name is None:
            raise LocalInfraError(f"no running leader: {self.members()}")
        return self.node(name)

    def node(self, name: str) -> PatroniNode:
        return next(node for node in self.nodes if node.node_name == name)

    def kill_primary(self, *, node: bool = False) -> PatroniNode:
        """SIGKILL the primary's postmaster (``node=True``: and its Patroni); the node killed.

        Returns at once: Patroni notices within ``loop_wait`` and the standby takes over
        (``wait_for_primary``). Until then the killed primary's orphaned backends may still
        finish what their connections send (acknowledged only once the standby has it)."""
        victim = self.primary()
        if node:
            victim.kill()
        else:
            pid = victim.kill_postmaster()
            log(f"killed the postmaster ({pid}) of {victim.node_name}, the primary")
        return victim

    def wait_for_primary(self, *, other_than: str | None, timeout: float) -> PatroniNode:
        """Wait until a node other than ``other_than`` runs as the primary; that node."""
        deadline = time.monotonic() + timeout
        while True:
            name = self._leader_name()
            if name is not None and name != other_than:
                return self.node(name)
            if time.monotonic() > deadline:
                raise LocalInfraError(
                    f"no new primary after {timeout:.0f}s: {self.members()}\n{self._diagnostics()}"
                )
            time.sleep(0.1)

    def wait_healthy(self, timeout: float) -> list[Member]:
        """Wait until one node leads and every other streams from it as a synchronous standby
        on the leader's timeline (a failed-over node has rejoined)."""
        deadline = time.monotonic() + timeout
        while True:
            members = self.members()
            leaders = [m for m in members if m.role == "leader" and m.state == "running"]
            standbys = [m for m in members if m.role != "leader"]
            if (
                len(members) == len(self.nodes)
                and len(leaders) == 1
                # Right after a kill Patroni still reports the dead primary as the leader
                # (it looks every loop_wait): its postmaster must be alive.
                and self.node(leaders[0].name).postmaster_pid() is not None
                and all(
                    m.state == "streaming" and m.timeline == leaders[0].timeline for m in standbys
                )
                and (not standbys or any(m.role == "sync_standby" for m in standbys))
            ):
                return members
            if time.monotonic() > deadline:
                raise LocalInfraError(
                    f"cluster not healthy after {timeout:.0f}s: {members}\n{self._diagnostics()}"
                )
            time.sleep(0.2)

    def _diagnostics(self) -> str:
        return "\n".join(node._diagnostics() for node in self.nodes)
