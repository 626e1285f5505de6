"""A single-node Apache Kafka broker+controller (KRaft) from the Maven jars, on free loopback
ports; optionally with a SASL_SSL listener beside the PLAINTEXT one (``SaslSslListener``)."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tools.localinfra.jars import kafka_jars_dir
from tools.localinfra.processes import HOST, LocalInfraError, free_ports, port_open, tail
from tools.localinfra.server import GuardedServer


@dataclass(frozen=True)
class SaslSslListener:
    """A SASL_SSL listener: TLS from PEM files, SCRAM-SHA-512 users created when the storage is
    formatted (``kafka-storage format --add-scram``), so they exist before the broker starts.

    The PLAINTEXT listener (also the inter-broker one) and the controller's stay as they are:
    only clients that choose this listener's port meet TLS and SASL.
    """

    #: PEM: the broker's private key (unencrypted PKCS#8) followed by its certificate chain.
    keystore: Path
    #: PEM: the CA certificates that client certificates must chain to (``client_auth``).
    truststore: Path
    #: SCRAM-SHA-512 users, name to password (neither may hold ``,``, ``=``, ``[`` or ``]``).
    users: Mapping[str, str] = field(default_factory=dict)
    #: Kafka's ``ssl.client.auth``: ``required`` makes it mutual TLS.
    client_auth: Literal["none", "requested", "required"] = "none"
    port: int | None = None


class LocalKafka(GuardedServer):
    """A single-node Apache Kafka 4.1 broker+controller (KRaft) on free 127.0.0.1 ports.

    ``fast=True`` (tests only) limits the JIT to C1, which starts the broker about a second
    sooner but lowers its peak throughput: never benchmark with it.
    """

    name = "kafka"
    title = "Kafka"
    stop_signal = signal.SIGTERM  # the JVM's shutdown hook closes the logs cleanly

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
        sasl_ssl: SaslSslListener | None = None,
        cluster_id: str | None = None,
    ) -> None:
        super().__init__(data_dir, fast=fast, port=port, start_timeout=start_timeout)
        self.controller_port = controller_port
        self.sasl_ssl = sasl_ssl
        self.sasl_ssl_port = sasl_ssl.port if sasl_ssl is not None else None
        self.heap = heap
        #: The KRaft cluster id the log dir is formatted with; every node of a cluster shares it.
        self.cluster_id = cluster_id or new_cluster_id()
        self.jars_dir = jars_dir
        self.config_file = self.data_dir / "server.properties"
        self.log_dir = self.data_dir / "data"  # log.dirs: the topics and the KRaft metadata log
        self.server_log = self.data_dir / "logs" / "server.log"
        self._java = ""
        self._log_offset = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.started_port()}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """The SASL_SSL listener's address (the broker has one: ``sasl_ssl`` was given)."""
        if self.sasl_ssl_port is None:
            raise LocalInfraError("this broker has no SASL_SSL listener")
        self.started_port()  # raises before the first start
        return f"{HOST}:{self.sasl_ssl_port}"

    def _stale_marker(self) -> str:
        return str(self.config_file)

    def _prepare(self) -> None:
        if self.jars_dir is None:
            self.jars_dir = kafka_jars_dir()
        self._java = _java()
        if self.port is None or self.controller_port is None:
            self.port, self.controller_port = free_ports(2)
        if self.sasl_ssl is not None and self.sasl_ssl_port is None:
            (self.sasl_ssl_port,) = free_ports(1)
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._server_properties())
        (self.data_dir / "log4j2.properties").write_text(_KAFKA_LOG4J2)
        if not (self.log_dir / "meta.properties").exists():
            self._format()
        self._log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0

    def _server_properties(self) -> str:
        secure = self.sasl_ssl
        sasl_ssl = f",SASL_SSL://{HOST}:{self.sasl_ssl_port}" if secure is not None else ""
        return (
            "process.roles=broker,controller\n"
            f"node.id={self.node_id}\n"
            f"controller.quorum.voters={self._quorum_voters()}\n"
            f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
            f"{sasl_ssl}\n"
            f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}{sasl_ssl}\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
            f"{',SASL_SSL:SASL_SSL' if secure is not None else ''}\n"
            f"log.dirs={self.log_dir}\n"
            f"{self._replication_properties()}"
            "group.initial.rebalance.delay.ms=0\n"
            "auto.create.topics.enable=false\n"
            "num.partitions=6\n"
            f"{_sasl_ssl_properties(secure) if secure is not None else ''}"
        )

    #: This broker's node.id (and its controller's): 1 for the single node.
    node_id = 1

    def _quorum_voters(self) -> str:
        """``controller.quorum.voters``: this node alone."""
        return f"{self.node_id}@{HOST}:{self.controller_port}"

    def _replication_properties(self) -> str:
        """How Kafka replicates its internal topics: one copy, there is one broker."""
        return (
            "offsets.topic.replication.factor=1\n"
            "offsets.topic.num.partitions=1\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
        )

    def _format(self) -> None:
        """Format the log dir for a new cluster (with static voters no --standalone is needed)."""
        result = subprocess.run(
            [self._java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", self._classpath(),
             "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
             "-c", str(self.config_file), "--ignore-formatted", *self._scram_users()],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise LocalInfraError(f"formatting {self.log_dir} failed:\n{result.stdout[-4000:]}")

    def _scram_users(self) -> list[str]:
        """``--add-scram`` arguments: the SASL_SSL listener's users, stored with the metadata."""
        users = self.sasl_ssl.users if self.sasl_ssl is not None else {}
        return [
            argument
            for name, password in users.items()
            for argument in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]

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
        try:
            with open(self.server_log, "rb") as log:
                log.seek(self._log_offset)
                started = b"Kafka Server started" in log.read()
        except OSError:
            return False
        return started and port_open(self.started_port())

    def _diagnostics(self) -> str:
        return f"{tail(self.server_log, offset=self._log_offset)}\n{tail(self.guard_out, lines=20)}"


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


def _sasl_ssl_properties(listener: SaslSslListener) -> str:
    """The SASL_SSL listener's own settings (``listener.name.sasl_ssl.*``): SCRAM-SHA-512, PEM
    key and trust stores, and whether a client certificate is asked for."""
    prefix = "listener.name.sasl_ssl."
    return (
        f"{prefix}sasl.enabled.mechanisms=SCRAM-SHA-512\n"
        f"{prefix}scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
        f"{prefix}ssl.keystore.type=PEM\n"
        f"{prefix}ssl.keystore.location={listener.keystore}\n"
        f"{prefix}ssl.truststore.type=PEM\n"
        f"{prefix}ssl.truststore.location={listener.truststore}\n"
        f"{prefix}ssl.client.auth={listener.client_auth}\n"
    )


def new_cluster_id() -> str:
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
