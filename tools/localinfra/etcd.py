"""A one-member etcd (Debian's ``etcd-server``): the store Patroni keeps its leader lock in.

One member is enough for a local cluster whose point is PostgreSQL's failover, not etcd's: the
nodes that fail over are the PostgreSQL ones (``patroni.py``). On Kubernetes the API server plays
this part (CloudNativePG), so nothing here is deployed.
"""

from __future__ import annotations

import json
import shutil
import signal
import urllib.request
from pathlib import Path

from tools.localinfra.processes import HOST, LocalInfraError, free_ports, tail
from tools.localinfra.server import GuardedServer


def etcd_binary() -> Path:
    """Debian's etcd (package ``etcd-server``), found on PATH or in /usr/bin."""
    found = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found is None:
        raise LocalInfraError(
            "etcd not found: install it (apt-get install -y etcd-server; ./tierline setup does)"
        )
    return Path(found)


class LocalEtcd(GuardedServer):
    """A single etcd member on two free 127.0.0.1 ports (clients, peers)."""

    name = "etcd"
    title = "etcd"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path | str, *, start_timeout: float = 60.0) -> None:
        super().__init__(data_dir, fast=False, port=None, start_timeout=start_timeout)
        self.peer_port: int | None = None
        self.store = self.data_dir / "member-data"

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client API, as Patroni's ``etcd3.hosts`` takes it."""
        return f"{HOST}:{self.started_port()}"

    def _stale_marker(self) -> str:
        return str(self.store)

    def _prepare(self) -> None:
        if self.port is None or self.peer_port is None:
            self.port, self.peer_port = free_ports(2)

    def _command(self) -> list[str]:
        client = f"http://{HOST}:{self.port}"
        peer = f"http://{HOST}:{self.peer_port}"
        return [
            str(etcd_binary()), "--name", "tierline", "--data-dir", str(self.store),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"tierline={peer}", "--initial-cluster-state", "new",
            "--log-level", "warn",
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _diagnostics(self) -> str:
        return tail(self.guard_out)
