"""Configuration from environment variables, validated once at start.

Each service declares the variables it reads as a `Settings` subclass; `load_settings` refuses to
start on a bad value with a message that names the variable.
"""

from __future__ import annotations

import sys
from typing import Annotated, Final, TypeVar
from urllib.parse import parse_qs

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=0, le=65535)]


class HttpSettings(BaseSettings):
    """What every service's HTTP side reads (shared/infra/http.py)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    #: How long a request may take to send its whole body before it is answered 408.
    tierline_body_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10


class CommonSettings(HttpSettings):
    """What every service reads."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)]
    tierline_topic_partitions: Annotated[int, Field(ge=1, le=1000)] = 6
    tierline_topic_replication: Annotated[int, Field(ge=1, le=10)] = 1
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
