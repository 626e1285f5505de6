"""Configuration from environment variables, validated once at start.

Each service declares the variables it reads as a `Settings` subclass; `load_settings` refuses to
start on a bad value with a message that names the variable.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Self, TypeVar
from urllib.parse import parse_qs

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.infra.kafka_connection import (
    SASL_PROTOCOLS,
    TLS_PROTOCOLS,
    KafkaConnection,
    SaslCredentials,
    SaslMechanism,
    SecurityProtocol,
    tls_context,
)

Port = Annotated[int, Field(ge=0, le=65535)]


class HttpSettings(BaseSettings):
    """What every service's HTTP side reads (shared/infra/http.py)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    #: How long a request may take to send its whole body before it is answered 408.
    tierline_body_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10


#: The TLS variables, each of which means nothing without TLS (SSL or SASL_SSL).
_TLS_FIELDS = (
    "kafka_ssl_ca_file",
    "kafka_ssl_cert_file",
    "kafka_ssl_key_file",
    "kafka_ssl_key_password",
    "kafka_ssl_check_hostname",
)
_SASL_FIELDS = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")


class KafkaSettings(BaseSettings):
    """Where Kafka is and how to reach it: what every service and tool that talks to Kafka reads.

    The security variables are checked together (a SASL protocol needs a username and password,
    TLS files must exist and parse, a certificate needs its key, and a variable of TLS or SASL
    with a protocol without it is a mistake, not a no-op) and make the one `KafkaConnection`
    (`kafka`) every Kafka client of the process is built from.
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)]
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    #: Used with SASL_PLAINTEXT or SASL_SSL only.
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    #: PEM: the CA certificates to trust; unset, the system's.
    kafka_ssl_ca_file: Path | None = None
    #: PEM: the client certificate and its private key, for a listener that asks for one (mTLS).
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True

    _kafka: KafkaConnection | None = PrivateAttr(default=None)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_ca_file",
        "kafka_ssl_cert_file",
        "kafka_ssl_key_file",
        "kafka_ssl_key_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """A variable set to "" (a chart's empty value) is one left unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _connection(self) -> Self:
        self._kafka = KafkaConnection(
            self.kafka_bootstrap_servers,
            self.kafka_security_protocol,
            sasl=self._sasl(),
            ssl_context=self._tls(),
        )
        return self

    def _sasl(self) -> SaslCredentials | None:
        protocol = self.kafka_security_protocol
        if protocol not in SASL_PROTOCOLS:
            _refuse_set(self, _SASL_FIELDS, f"KAFKA_SECURITY_PROTOCOL {protocol} uses no SASL")
            return None
        missing = [
            name.upper()
            for name in ("kafka_sasl_username", "kafka_sasl_password")
            if getattr(self, name) is None
        ]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise ValueError(
                f"{' and '.join(missing)} {verb} required with KAFKA_SECURITY_PROTOCOL {protocol}"
            )
        assert self.kafka_sasl_username is not None and self.kafka_sasl_password is not None
        return SaslCredentials(
            self.kafka_sasl_mechanism,
            self.kafka_sasl_username,
            self.kafka_sasl_password.get_secret_value(),
        )

    def _tls(self) -> ssl.SSLContext | None:
        protocol = self.kafka_security_protocol
        if protocol not in TLS_PROTOCOLS:
            _refuse_set(self, _TLS_FIELDS, f"KAFKA_SECURITY_PROTOCOL {protocol} uses no TLS")
            return None
        cert, key = self.kafka_ssl_cert_file, self.kafka_ssl_key_file
        if (cert is None) != (key is None):
            given, needed = ("CERT", "KEY") if key is None else ("KEY", "CERT")
            raise ValueError(f"KAFKA_SSL_{given}_FILE needs KAFKA_SSL_{needed}_FILE (mutual TLS)")
        if self.kafka_ssl_key_password is not None and key is None:
            raise ValueError("KAFKA_SSL_KEY_PASSWORD is set without KAFKA_SSL_KEY_FILE")
        password = self.kafka_ssl_key_password
        return tls_context(
            ca_file=self.kafka_ssl_ca_file,
            cert_file=cert,
            key_file=key,
            key_password=password.get_secret_value() if password is not None else None,
            check_hostname=self.kafka_ssl_check_hostname,
        )

    @property
    def kafka(self) -> KafkaConnection:
        """The one connection every Kafka client of this process is built from."""
        assert self._kafka is not None, "made when the settings are validated"
        return self._kafka


def kafka_settings_from(environ: Mapping[str, str]) -> KafkaSettings:
    """`KafkaSettings` read from `environ` alone (a child process's environment), for a tool
    that must reach Kafka exactly as the services it starts do; ValidationError when bad."""
    given = {
        name: environ[name.upper()]
        for name in KafkaSettings.model_fields
        if name.upper() in environ
    }
    return _KafkaSettingsFromArguments.model_validate(given)


class _KafkaSettingsFromArguments(KafkaSettings):
    """KafkaSettings from its arguments alone: never this process's environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _refuse_set(settings: BaseSettings, names: tuple[str, ...], why: str) -> None:
    """A variable set that the protocol does not use is refused: it says the operator meant
    something else (TLS or SASL) than what the protocol will do."""
    given = [
        name.upper()
        for name in names
        if name in settings.model_fields_set and getattr(settings, name) is not None
    ]
    if given:
        raise ValueError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} set, but {why}")


class CommonSettings(HttpSettings, KafkaSettings):
    """What every service reads."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    tierline_topic_partitions: Annotated[int, Field(ge=1, le=1000)] = 6
    #: Copies of each topic created at start; unset: min(3, the cluster's live brokers).
    tierline_topic_replication: Annotated[int, Field(ge=1, le=10)] | None = None
    tierline_http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_format: str = "json"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in {"json", "text"}:
            raise ValueError("must be json or text")
        return value


class DatabaseSettings(CommonSettings):
    database_url: Annotated[str, Field(min_length=1)]
    database_pool_size: Annotated[int, Field(ge=1, le=100)] = 8

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        database_hosts(value)
        return value


#: What asyncpg takes for `target_session_attrs`, and which of those only ever reach a primary.
SESSION_ATTRS: Final = frozenset(
    {"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}
)
WRITABLE_SESSION_ATTRS: Final = frozenset({"primary", "read-write"})


def database_hosts(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of a `postgresql://` URL, in order (none: the client's default
    host); ValueError saying what is wrong.

    A URL may name several hosts (`postgresql://user@h1:5432,h2:5432/db`): the client tries them
    in turn. With more than one it must say `target_session_attrs=read-write` (or `primary`):
    otherwise a service could connect to a standby and every write would fail there.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL")
    authority, _, path_query = rest.partition("/")
    _, _, hostlist = authority.rpartition("@")
    query = parse_qs(path_query.partition("?")[2])
    # No host at all is the client's default (PGHOST, or the local socket), as libpq has it.
    specs = hostlist.split(",") if hostlist else []
    hosts = [_host_port(spec, n) for n, spec in enumerate(specs, start=1)]
    attrs = query.get("target_session_attrs", [])
    if any(attr not in SESSION_ATTRS for attr in attrs):
        raise ValueError(f"target_session_attrs must be one of {', '.join(sorted(SESSION_ATTRS))}")
    if len(hosts) > 1 and not (attrs and attrs[-1] in WRITABLE_SESSION_ATTRS):
        raise ValueError(
            f"names {len(hosts)} hosts but not target_session_attrs=read-write: "
            "a service could connect to a standby, where no write succeeds"
        )
    return hosts


def _host_port(spec: str, n: int) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port`, the `n`th host of a URL; 5432 when no port is given."""
    if spec.startswith("["):
        host, _, after = spec[1:].partition("]")
        if after and not after.startswith(":"):
            raise ValueError(f"host {n} ({spec!r}) is not host:port")
        port = after[1:] if after else None
    else:
        host, colon, port_text = spec.rpartition(":")
        host, port = (host, port_text) if colon else (spec, None)
    if not host:
        raise ValueError(f"host {n} ({spec!r}) has no name" if spec else f"host {n} is empty")
    if port is None:
        return host, 5432
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"host {n} ({spec!r}) has no port in 1..65535")
    return host, int(port)


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Read `cls` from the environment, or exit naming every bad variable."""
    try:
        return cls()
    except ValidationError as error:
        for problem in error.errors():
            detail = "is required" if problem["type"] == "missing" else problem["msg"]
            if problem["loc"]:
                print(
                    f"configuration error: {str(problem['loc'][0]).upper()} {detail}",
                    file=sys.stderr,
                )
            else:  # a rule spanning several variables: its message names the one at fault
                detail = detail.removeprefix("Value error, ")
                print(f"configuration error: {detail}", file=sys.stderr)
        raise SystemExit(2) from None
