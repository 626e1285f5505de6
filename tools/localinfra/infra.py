"""Both servers for one test session or one local run, started concurrently."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from tools.localinfra.cluster import LocalKafkaCluster
from tools.localinfra.kafka import LocalKafka
from tools.localinfra.patroni import LocalPatroniCluster
from tools.localinfra.postgres import LocalPostgres
from tools.localinfra.server import Startable


class LocalInfra(Startable):
    """Kafka and PostgreSQL for one test session or one local run, under ``data_dir``.

    ``start()`` starts, concurrently, whichever of the enabled servers is not running yet;
    ``stop()`` stops both. ``kafka`` and ``postgres`` can also be started one by one (lazily).
    ``postgres_ha``: PostgreSQL with failover (``postgres_cluster``, Patroni and etcd) in place of
    the single server.
    ``kafka_brokers=3`` (or more) makes ``kafka`` a ``LocalKafkaCluster`` instead of one broker.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        kafka: bool = True,
        postgres: bool = True,
        fast: bool = False,
        postgres_ha: bool = False,
        kafka_brokers: int = 1,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.kafka: LocalKafka | LocalKafkaCluster = (
            LocalKafka(self.data_dir / "kafka", fast=fast)
            if kafka_brokers == 1
            else LocalKafkaCluster(self.data_dir / "kafka", size=kafka_brokers, fast=fast)
        )
        self.postgres = LocalPostgres(self.data_dir / "postgres", fast=fast)
        self.postgres_cluster = (
            LocalPatroniCluster(self.data_dir / "patroni", fast=fast) if postgres_ha else None
        )
        self._enabled: list[
            LocalKafka | LocalKafkaCluster | LocalPostgres | LocalPatroniCluster
        ] = [
            server
            for server, wanted in (
                (self.kafka, kafka),
                (self.postgres_cluster or self.postgres, postgres),
            )
            if wanted
        ]

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def database_url(self) -> str:
        if self.postgres_cluster is not None:
            return self.postgres_cluster.url
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
        for server in (self.kafka, self.postgres, self.postgres_cluster):
            if server is not None:
                server.stop()
