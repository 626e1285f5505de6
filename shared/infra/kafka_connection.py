"""How every Kafka client of Tierline reaches the cluster: its address and its security.

One `KafkaConnection` is made from the settings at start (`KafkaSettings.kafka`) and handed to
whatever talks to Kafka; its `producer`, `consumer`, `admin` and `broker` are the only places a
Kafka client is constructed (tests/unit/test_kafka_clients.py holds every module to that), so no
client can reach a secured cluster in plaintext, or with other credentials, by being forgotten.

`check_access` tells an outage (waited out) from a refusal (the credentials, the certificates or
the protocol are wrong: retrying cannot help), so a misconfigured service stops at start with a
message naming the variable instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

log = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

SECURITY_PROTOCOLS: Final[tuple[SecurityProtocol, ...]] = get_args(SecurityProtocol)
SASL_MECHANISMS: Final[tuple[SaslMechanism, ...]] = get_args(SaslMechanism)
TLS_PROTOCOLS: Final = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS: Final = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})

_FASTSTREAM_SASL: Final = {
    "SCRAM-SHA-512": SASLScram512,
    "SCRAM-SHA-256": SASLScram256,
    "PLAIN": SASLPlaintext,
}


@dataclass(frozen=True)
class SaslCredentials:
    mechanism: SaslMechanism
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class KafkaConnection:
    """Bootstrap servers and security: everything a Kafka client needs to reach the cluster."""

    bootstrap_servers: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl: SaslCredentials | None = None
    #: Present exactly when the protocol is SSL or SASL_SSL (`tls_context` makes it).
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.security_protocol in SASL_PROTOCOLS) != (self.sasl is not None):
            raise ValueError(f"{self.security_protocol} with sasl={self.sasl!r}")
        if (self.security_protocol in TLS_PROTOCOLS) != (self.ssl_context is not None):
            raise ValueError(f"{self.security_protocol} with ssl_context={self.ssl_context!r}")

    @classmethod
    def plaintext(cls, bootstrap_servers: str) -> KafkaConnection:
        """A cluster without security (the local broker of tests and `./tierline up`)."""
        return cls(bootstrap_servers)

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for reaching the cluster."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if self.sasl is not None:
            options["sasl_mechanism"] = self.sasl.mechanism
            options["sasl_plain_username"] = self.sasl.username
            options["sasl_plain_password"] = self.sasl.password
        return options

    def security(self) -> BaseSecurity | None:
        """FastStream's form of the same security (it also goes into the AsyncAPI document)."""
        if self.sasl is not None:
            return _FASTSTREAM_SASL[self.sasl.mechanism](
                self.sasl.username,
                self.sasl.password,
                ssl_context=self.ssl_context,
                use_ssl=self.security_protocol == "SASL_SSL",
            )
        if self.ssl_context is not None:
            return BaseSecurity(ssl_context=self.ssl_context)
        return None

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.client_options(), **options)

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.client_options(), **options)

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.client_options(), **options)

    def broker(self, **options: Any) -> KafkaBroker:
        return KafkaBroker(
            bootstrap_list(self.bootstrap_servers), security=self.security(), **options
        )

    def describe(self) -> str:
        """For logs and messages: where, how, as whom (never the password)."""
        who = f" as {self.sasl.username} ({self.sasl.mechanism})" if self.sasl else ""
        return f"{self.bootstrap_servers} over {self.security_protocol}{who}"


def bootstrap_list(bootstrap_servers: str) -> list[str]:
    """`host:port,host:port` as a list. aiokafka's own clients split the string themselves, but
    FastStream's broker takes a string for one address: given a cluster's list as one string it
    would try to resolve all of it as one host name and never connect."""
    return [server.strip() for server in bootstrap_servers.split(",") if server.strip()]


class TlsFileError(ValueError):
    """A TLS file named by a variable is missing or is not what the variable says."""


def tls_context(
    *,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    key_password: str | None,
    check_hostname: bool,
) -> ssl.SSLContext:
    """The client side of TLS: the CA's certificates to trust (else the system's), and the client
    certificate and key for mutual TLS. Each problem is a TlsFileError naming its variable."""
    if ca_file is not None:  # then only that CA: as a Kafka client's truststore
        context = ssl.create_default_context(cafile=_certificates("KAFKA_SSL_CA_FILE", ca_file))
    else:
        context = ssl.create_default_context()
    context.check_hostname = check_hostname
    if cert_file is not None and key_file is not None:
        _certificates("KAFKA_SSL_CERT_FILE", cert_file)
        key_text = _readable("KAFKA_SSL_KEY_FILE", key_file)
        if "PRIVATE KEY-----" not in key_text:
            raise TlsFileError(f"KAFKA_SSL_KEY_FILE {key_file} holds no PEM private key")
        encrypted = "ENCRYPTED" in key_text
        if encrypted and not key_password:
            raise TlsFileError(
                f"KAFKA_SSL_KEY_FILE {key_file} is encrypted: KAFKA_SSL_KEY_PASSWORD is required"
            )
        try:
            # A callable, always: with none OpenSSL would ask for a password on the terminal.
            context.load_cert_chain(str(cert_file), str(key_file), lambda: key_password or "")
        except ssl.SSLError as error:
            if error.reason == "KEY_VALUES_MISMATCH":
                raise TlsFileError(
                    f"KAFKA_SSL_KEY_FILE {key_file} is not the key of the certificate in "
                    f"KAFKA_SSL_CERT_FILE {cert_file}"
                ) from None
            if encrypted:
                raise TlsFileError(
                    f"KAFKA_SSL_KEY_PASSWORD does not decrypt KAFKA_SSL_KEY_FILE {key_file}"
                ) from None
            raise TlsFileError(
                f"KAFKA_SSL_KEY_FILE {key_file} does not parse as a PEM private key: {error}"
            ) from None
    return context


def _readable(variable: str, path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        raise TlsFileError(f"{variable} {path} does not exist") from None
    except OSError as error:
        raise TlsFileError(f"{variable} {path} cannot be read: {error.strerror}") from None


def _certificates(variable: str, path: Path) -> str:
    """`path`, once it is known to hold at least one PEM certificate."""
    _readable(variable, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError:
        raise TlsFileError(f"{variable} {path} holds no PEM certificate") from None
    return str(path)


class KafkaAccessRefused(Exception):
    """Kafka answered, and refused this connection's security settings: waiting cannot help."""


async def check_access(kafka: KafkaConnection, *, timeout: float = 15.0) -> None:
    """Connect once to the bootstrap servers with `kafka`'s security, to stop at start when the
    cluster refuses it. Returns at the first server that accepts, and also when none answers at
    all (an outage: the caller waits it out as before); raises KafkaAccessRefused, saying which
    variable to look at, when a server answered and refused."""
    refusal: KafkaAccessRefused | None = None
    for host, port, _ in collect_hosts(kafka.bootstrap_servers, randomize=False):
        options = kafka.client_options()
        del options["bootstrap_servers"]
        try:
            connection = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id="tierline-access-check",
                    request_timeout_ms=int(timeout * 1000),
                    **options,
                ),
                timeout,
            )
        except (KafkaError, OSError, TimeoutError) as error:
            reason = refusal_reason(kafka, error)
            if reason is None:
                log.warning(
                    "kafka not reachable yet",
                    extra={"error": f"{host}:{port}: {error!r}"},
                )
                continue
            refusal = KafkaAccessRefused(f"Kafka at {host}:{port} refused the connection: {reason}")
            continue
        connection.close()
        return
    if refusal is not None:
        log.error("kafka refused this service's security settings", extra={"error": str(refusal)})
        raise refusal


def refusal_reason(kafka: KafkaConnection, error: BaseException) -> str | None:
    """Why `error` (from connecting with `kafka`) is a refusal of its security settings, naming
    the variables to look at; None when it looks like an outage."""
    cause = error.__cause__ if isinstance(error, KafkaError) else None
    if isinstance(error, SaslAuthenticationFailed):
        user = kafka.sasl.username if kafka.sasl else ""
        return (
            f"{error} (check KAFKA_SASL_USERNAME {user!r} and KAFKA_SASL_PASSWORD, "
            "and KAFKA_SASL_MECHANISM)"
        )
    if isinstance(error, UnsupportedSaslMechanismError):
        mechanism = kafka.sasl.mechanism if kafka.sasl else ""
        return f"KAFKA_SASL_MECHANISM {mechanism} is not enabled on this listener"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"its certificate is not trusted: {error.verify_message} "
            "(KAFKA_SSL_CA_FILE; KAFKA_SSL_CHECK_HOSTNAME for a name mismatch)"
        )
    if isinstance(error, ssl.SSLError) or isinstance(cause, ssl.SSLError):
        tls_error = error if isinstance(error, ssl.SSLError) else cause
        return (
            f"the TLS handshake failed: {tls_error} (a listener asking for a client "
            "certificate needs KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE signed by a CA it trusts;"
            " KAFKA_SECURITY_PROTOCOL must match the listener)"
        )
    if (
        isinstance(cause, asyncio.IncompleteReadError)
        and cause.expected is not None
        and cause.expected >> 24 in (0x15, 0x16)  # a TLS record header read as a frame size
        and kafka.security_protocol not in TLS_PROTOCOLS
    ):
        return (
            f"the listener speaks TLS but KAFKA_SECURITY_PROTOCOL is {kafka.security_protocol} "
            "(SSL or SASL_SSL)"
        )
    return None
