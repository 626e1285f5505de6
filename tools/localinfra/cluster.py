"""A three-node Apache Kafka (KRaft) cluster as local processes, for tests that kill brokers.

Each node is one JVM that is both broker and controller, with its own data folder and ports; the
three controllers form the metadata quorum (three static voters, so any one node may die). The
internal topics are replicated like production topics: three copies, two in sync before a write
is acknowledged (``min.insync.replicas=2`` is also the default of every topic), so the cluster
keeps accepting acks=all writes with one broker down and loses no acknowledged write when any
one broker dies.

Three JVMs share a small machine: each gets ``heap`` (320 MiB by default, where the single broker
has 512) and fewer request threads than Kafka's defaults.

    with LocalKafkaCluster(Path("/tmp/cluster")) as cluster:
        cluster.bootstrap_servers       # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
        cluster.kill(2)                 # SIGKILL node 2: a crash, as far as Kafka can tell
        cluster.restart(2)              # back on the same ports and data
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, Self

from tools.localinfra.kafka import LocalKafka, new_cluster_id
from tools.localinfra.processes import HOST, LocalInfraError, free_ports
from tools.localinfra.server import Startable

#: Brokers of the local cluster: the smallest that survives one broker with min ISR 2.
CLUSTER_SIZE: Final = 3
#: Each node's JVM heap: three of them share the machine with the services and PostgreSQL.
NODE_HEAP: Final = "320m"


def kafka_brokers(text: str) -> int:
    """A `--kafka-brokers` value: 1 (one broker), or a cluster of 3 to 9 (two brokers could not
    lose one and keep two copies in sync). ValueError otherwise."""
    if not text.strip().isdigit() or not (int(text) == 1 or CLUSTER_SIZE <= int(text) <= 9):
        raise ValueError(f"must be 1, or {CLUSTER_SIZE} to 9 brokers, not {text!r}")
    return int(text)


class KafkaNode(LocalKafka):
    """One broker+controller of a ``LocalKafkaCluster``: its ports and the quorum are given."""

    def __init__(
        self,
        data_dir: Path,
        *,
        node_id: int,
        voters: str,
        port: int,
        controller_port: int,
        cluster_id: str,
        fast: bool,
        heap: str,
    ) -> None:
        super().__init__(
            data_dir,
            fast=fast,
            port=port,
            controller_port=controller_port,
            heap=heap,
            cluster_id=cluster_id,
        )
        self.node_id = node_id
        self.voters = voters
        self.name = f"kafka-{node_id}"
        self.title = f"Kafka node {node_id}"

    def _quorum_voters(self) -> str:
        return self.voters

    def _replication_properties(self) -> str:
        """Three copies of everything, two in sync for a write, no unclean leader; fewer request
        threads than Kafka's defaults, since three brokers share two cores."""
        return (
            f"offsets.topic.replication.factor={CLUSTER_SIZE}\n"
            "offsets.topic.num.partitions=3\n"
            f"transaction.state.log.replication.factor={CLUSTER_SIZE}\n"
            "transaction.state.log.min.isr=2\n"
            f"share.coordinator.state.topic.replication.factor={CLUSTER_SIZE}\n"
            "share.coordinator.state.topic.min.isr=2\n"
            f"default.replication.factor={CLUSTER_SIZE}\n"
            "min.insync.replicas=2\n"
            "unclean.leader.election.enable=false\n"
            # A restarted broker leads its preferred partitions again within seconds (Kafka's
            # default looks every 5 minutes), so a test can kill the next leader soon after.
            "leader.imbalance.check.interval.seconds=5\n"
            "num.network.threads=2\n"
            "num.io.threads=4\n"
            "background.threads=4\n"
        )

    def kill(self) -> None:
        """SIGKILL the broker (no shutdown hook, no controlled shutdown) and reap its guard."""
        pid = self.pid
        if pid is None:
            raise LocalInfraError(f"{self.title} is not running: nothing to kill")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        guard = self._guard
        if guard is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                guard.wait(10)  # the guard exits as soon as it sees its server gone
        self.stop()  # closes the guard's pipe; nothing is left to signal


class LocalKafkaCluster(Startable):
    """``size`` KRaft nodes (broker+controller each) on free 127.0.0.1 ports under ``data_dir``.

    ``start()`` starts every node that is not running, concurrently (a controller needs a
    majority of its voters up before its broker reports started); ``stop()`` stops them all.
    ``kill(node_id)`` and ``restart(node_id)`` act on one node; node ids are Kafka's own
    ``node.id`` (1..size), the numbers metadata gives as partition leaders.
    """

    name = "kafka"
    title = "Kafka cluster"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        size: int = CLUSTER_SIZE,
        fast: bool = False,
        heap: str = NODE_HEAP,
    ) -> None:
        if size < CLUSTER_SIZE:
            raise LocalInfraError(f"a Kafka cluster here has at least {CLUSTER_SIZE} nodes")
        self.data_dir = Path(data_dir).absolute()
        self.size = size
        self.fast = fast
        self.heap = heap
        self._nodes: dict[int, KafkaNode] = {}

    @property
    def nodes(self) -> dict[int, KafkaNode]:
        """The nodes by node id (built at the first start, when their ports are chosen)."""
        if not self._nodes:
            self._nodes = self._build_nodes()
        return self._nodes

    def _build_nodes(self) -> dict[int, KafkaNode]:
        ports = free_ports(2 * self.size)
        ids = range(1, self.size + 1)
        controller_ports = dict(zip(ids, ports[self.size :], strict=True))
        voters = ",".join(f"{n}@{HOST}:{controller_ports[n]}" for n in ids)
        cluster_id = new_cluster_id()  # every node is formatted with the same one
        return {
            n: KafkaNode(
                self.data_dir / f"node-{n}",
                node_id=n,
                voters=voters,
                port=ports[n - 1],
                controller_port=controller_ports[n],
                cluster_id=cluster_id,
                fast=self.fast,
                heap=self.heap,
            )
            for n in ids
        }

    @property
    def bootstrap_servers(self) -> str:
        """Every node's listener: a client finds the cluster through whichever answers."""
        return ",".join(f"{HOST}:{node.started_port()}" for node in self.nodes.values())

    @property
    def running(self) -> bool:
        """True while every node runs."""
        return bool(self._nodes) and all(node.running for node in self._nodes.values())

    def node(self, node_id: int) -> KafkaNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise LocalInfraError(
                f"no Kafka node {node_id}: the nodes are 1..{self.size}"
            ) from None

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        missing = [node for node in self.nodes.values() if not node.running]
        try:
            _each(missing, lambda node: node.start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # All at once: stopped one by one, the last nodes would wait for a quorum that is gone.
        _each(list(self._nodes.values()), lambda node: node.stop())

    def restart(self, node_id: int | None = None) -> Self:
        """Restart one node (stopped gracefully if it runs), or, without a node id, the whole
        cluster. Same ports, same data."""
        if node_id is None:
            self.stop()
            return self.start()
        self.node(node_id).restart()
        return self

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: its broker and its controller vanish without a word."""
        self.node(node_id).kill()


def _each(nodes: Iterable[KafkaNode], action: Callable[[KafkaNode], object]) -> None:
    """Run ``action`` on every node concurrently; raise the first failure."""
    chosen = list(nodes)
    if not chosen:
        return
    with ThreadPoolExecutor(len(chosen), thread_name_prefix="kafka-cluster") as pool:
        futures = [pool.submit(action, node) for node in chosen]
        errors = [future.exception() for future in futures]
    first_error = next((error for error in errors if error is not None), None)
    if first_error is not None:
        raise first_error
