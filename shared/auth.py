"""API keys (SPEC §2): intake keys name a source system and are good only for posting work items;
the admin key is good for every other endpoint. No key or an unknown key is 401; a valid key on an
endpoint it is not good for is 403. Keys are compared in constant time."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import Enum
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Role(Enum):
    INTAKE = "intake"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    role: Role
    #: For an intake key, the source system it names.
    source: str | None = None


def parse_intake_keys(value: str) -> dict[str, str]:
    """`source=key,source=key` → {key: source}."""
    keys: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        source, sep, key = entry.partition("=")
        source, key = source.strip(), key.strip()
        if not sep or not source or not key:
            raise ValueError(f"entry {entry!r} is not source=key")
        if key in keys:
            raise ValueError(f"a key is given twice (sources {keys[key]!r} and {source!r})")
        keys[key] = source
    if not keys:
        raise ValueError("must name at least one source=key")
    return keys


class KeySettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    tierline_admin_key: Annotated[str, Field(min_length=16)]
    tierline_intake_keys: str

    @field_validator("tierline_intake_keys")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        parse_intake_keys(value)
        return value


class KeyRing:
    def __init__(self, *, admin_key: str, intake_keys: dict[str, str]) -> None:
        self._keys: list[tuple[bytes, Caller]] = [(admin_key.encode(), Caller(Role.ADMIN))]
        self._keys += [
            (key.encode(), Caller(Role.INTAKE, source)) for key, source in intake_keys.items()
        ]

    @classmethod
    def from_settings(cls, settings: KeySettings) -> KeyRing:
        return cls(
            admin_key=settings.tierline_admin_key,
            intake_keys=parse_intake_keys(settings.tierline_intake_keys),
        )

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller a `Authorization: Bearer <key>` header names, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = token.strip().encode()
        found: Caller | None = None
        for key, caller in self._keys:  # no early exit: the time taken says nothing
            if hmac.compare_digest(key, presented):
                found = caller
        return found
