"""Session fixtures: a real Kafka broker and PostgreSQL, started only when a test asks for one.

Each service comes from the first source that works: an address in the environment
(``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``); testcontainers when a Docker daemon answers;
else real local processes from ``tools.localinfra`` (fast mode) under a fresh temp dir. With
``TIERLINE_TEST_POSTGRES_HA=1`` the local PostgreSQL is a primary and a synchronous standby
(Patroni, etcd) reached by a multi-host DSN; tests/e2e/test_failover.py starts its own anyway.
Unit tests request none of these fixtures, so they start nothing.

``TIERLINE_TEST_KAFKA_BROKERS=3`` makes the session's local Kafka a three-node KRaft cluster
(default 1: one broker). A test that kills brokers asks for ``kafka_cluster``: the session's
cluster when it is one, else a cluster of its own for its module.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.infra.kafka_connection import KafkaConnection
from tools.localinfra import LocalInfra, LocalKafkaCluster
from tools.localinfra.cluster import kafka_brokers


class _Unmanaged:
    """Stands in for LocalKafka/LocalPostgres when this session did not start the service."""

    def __init__(self, name: str, source: str) -> None:
        self.name, self.source = name, source

    def restart(self) -> None:
        raise NotImplementedError(f"cannot restart {self.name}: it comes from {self.source}")

    start = stop = restart


_ENV = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "postgres": "DATABASE_URL"}


def _kafka_brokers() -> int:
    """``TIERLINE_TEST_KAFKA_BROKERS``: brokers of the session's local Kafka (1, or 3 to 9)."""
    try:
        return kafka_brokers(os.environ.get("TIERLINE_TEST_KAFKA_BROKERS", "").strip() or "1")
    except ValueError as error:
        raise pytest.UsageError(f"TIERLINE_TEST_KAFKA_BROKERS {error}") from None


def _docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    with warnings.catch_warnings():  # docker-py leaks a socket when no daemon answers
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env()
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


class _Services:
    """Where this session's Kafka and PostgreSQL come from; each starts on first use."""

    def __init__(self) -> None:
        self._docker: bool | None = None
        self._containers: list[Any] = []
        self._local: LocalInfra | None = None

    @property
    def local(self) -> LocalInfra:
        if self._local is None:
            data_dir = Path(tempfile.mkdtemp(prefix="tierline-test-"))
            data_dir.chmod(0o755)  # PostgreSQL runs as nobody when we are root
            self._local = LocalInfra(
                data_dir,
                fast=True,
                kafka_brokers=_kafka_brokers(),
                postgres_ha=os.environ.get("TIERLINE_TEST_POSTGRES_HA", "") == "1",
            )
        return self._local

    def source(self, name: str) -> str:
        """Which source serves ``name``: "env", "docker" or "local"."""
        if os.environ.get(_ENV[name]):
            return "env"
        if self._docker is None:
            self._docker = _docker_answers()
        return "docker" if self._docker else "local"

    def kafka(self) -> str:
        source = self.source("kafka")
        if source == "env":
            return os.environ[_ENV["kafka"]]
        if source == "docker":
            try:
                from testcontainers.community.kafka import KafkaContainer
            except ImportError:
                from testcontainers.kafka import KafkaContainer
            container = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
            self._containers.append(container.start())
            return str(container.get_bootstrap_server())
        return self.local.kafka.start().bootstrap_servers

    def database(self) -> str:
        source = self.source("postgres")
        if source == "env":
            return os.environ[_ENV["postgres"]]
        if source == "docker":
            try:
                from testcontainers.community.postgres import PostgresContainer
            except ImportError:
                from testcontainers.postgres import PostgresContainer
            container = PostgresContainer("postgres:15", driver=None)
            self._containers.append(container.start())
            return str(container.get_connection_url())
        if self.local.postgres_cluster is not None:
            return self.local.postgres_cluster.start().url
        return self.local.postgres.start().url

    def close(self) -> None:
        for container in reversed(self._containers):
            container.stop()
        if self._local is not None:
            self._local.stop()
            shutil.rmtree(self._local.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _services() -> Iterator[_Services]:
    services = _Services()
    yield services
    services.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(_services: _Services) -> str:
    return _services.kafka()


@pytest.fixture(scope="session")
def kafka(kafka_bootstrap: str) -> KafkaConnection:
    """The session's broker as Tierline's own clients reach it (PLAINTEXT)."""
    return KafkaConnection.plaintext(kafka_bootstrap)


@pytest.fixture(scope="session")
def database_url(_services: _Services) -> str:
    return _services.database()


@pytest.fixture
def infra(_services: _Services) -> LocalInfra | SimpleNamespace:
    """The LocalInfra behind the session's services, for restart tests.

    Request it together with ``kafka_bootstrap`` / ``database_url`` (which start the services).
    A service that comes from the environment or testcontainers is a stand-in whose
    ``restart()`` raises NotImplementedError.
    """
    sources = {name: _services.source(name) for name in _ENV}
    if all(source == "local" for source in sources.values()):
        return _services.local
    return SimpleNamespace(
        **{
            name: getattr(_services.local, name) if source == "local" else _Unmanaged(name, source)
            for name, source in sources.items()
        }
    )


@pytest.fixture(scope="module")
def kafka_cluster(
    _services: _Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalKafkaCluster]:
    """A running three-node local Kafka cluster whose brokers a test may kill and restart: the
    session's when ``TIERLINE_TEST_KAFKA_BROKERS`` made it one, else one for this module alone
    (its own ports and data; stopped when the module ends, so other modules never see it)."""
    if _services.source("kafka") == "local" and isinstance(
        _services.local.kafka, LocalKafkaCluster
    ):
        _services.kafka()
        yield _services.local.kafka
        return
    data_dir = tmp_path_factory.mktemp("kafka-cluster")
    cluster = LocalKafkaCluster(data_dir, fast=True)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
