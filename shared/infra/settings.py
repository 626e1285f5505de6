"""Configuration from environment variables, validated once at start.

Each service declares the variables it reads as a `Settings` subclass; `load_settings` refuses to
start on a bad value with a message that names the variable.
"""

from __future__ import annotations

import sys
from typing import Annotated, TypeVar

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
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value


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
