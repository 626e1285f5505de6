"""A real single-node Apache Kafka (KRaft) and a private PostgreSQL, as local processes.

For tests and the local run mode on machines without a Docker engine: the broker runs from
Maven Central jars (``deploy/kafka/pom.xml``), PostgreSQL from the distribution's server binaries.
Both listen on free 127.0.0.1 ports and keep their files under a data folder you choose.

    with LocalInfra(Path("/tmp/tierline-dev")) as infra:
        infra.kafka_bootstrap    # "127.0.0.1:PORT"
        infra.database_url       # "postgresql://postgres@127.0.0.1:PORT/postgres"

    python -m tools.localinfra [--data-dir DIR]     # prints both and waits for Ctrl-C

No orphans: each server runs under a small guard process in its own process group, and is
stopped by ``stop()``, at exit, or when this process dies (see ``guard.py``).

The parts: ``processes`` (loopback ports, the process table), ``guard`` (the process that keeps a
server from outliving us), ``server`` (what a guarded server has in common), ``jars`` (the broker's
jars, via Maven), ``kafka``, ``cluster`` (three Kafka nodes, for tests that kill brokers),
``postgres``, ``etcd`` and ``patroni`` (PostgreSQL with failover: ``LocalPatroniCluster``), and
``infra`` (both together).
"""

from tools.localinfra.cluster import LocalKafkaCluster
from tools.localinfra.infra import LocalInfra
from tools.localinfra.jars import REPO_ROOT, cache_dir, kafka_jars_dir, kafka_version
from tools.localinfra.kafka import LocalKafka
from tools.localinfra.patroni import LocalPatroniCluster
from tools.localinfra.postgres import LocalPostgres, postgres_bin_dir
from tools.localinfra.processes import (
    HOST,
    LocalInfraError,
    free_port,
    group_members,
    pid_alive,
    port_open,
)

__all__ = [
    "HOST",
    "REPO_ROOT",
    "LocalInfra",
    "LocalInfraError",
    "LocalKafka",
    "LocalKafkaCluster",
    "LocalPatroniCluster",
    "LocalPostgres",
    "cache_dir",
    "free_port",
    "group_members",
    "kafka_jars_dir",
    "kafka_version",
    "pid_alive",
    "port_open",
    "postgres_bin_dir",
]
