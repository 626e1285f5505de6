"""API keys (SPEC §2, §13): intake keys name a source system and are good only for posting work
items; admin keys are good for every other endpoint; client keys (`TIERLINE_CLIENT_KEYS`) read one
client's own documents and write nothing. No key or an unknown key is 401; a valid key
on an endpoint it is not good for is 403. Keys are compared in constant time.

`TIERLINE_ADMIN_KEY` may hold several comma-separated keys, so a key can be rotated without
downtime. Key lists split on commas, then at the first `=`, each part trimmed; a key that appears
twice, in one list or across lists, stops the service at start. The keys once published as
defaults (the old compose file's `change-me-…` values) are refused unless the local run command
(`./tierline up`, which sets `TIERLINE_LOCAL_RUN`) starts the service.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, Self

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.agreement.fields import CLIENT_ID_PATTERN, is_client_id

#: The shortest admin key accepted.
MIN_ADMIN_KEY_LENGTH: Final = 16

#: Keys that were published as defaults; anyone can read them, so no deployment may use them.
PUBLISHED_DEFAULT_KEYS: Final = frozenset(
    {
        "change-me-admin-key-0123456789",
        "change-me-intake-servicenow",
        "change-me-intake-zendesk",
        "change-me-intake-jira",
    }
)


class Role(Enum):
    INTAKE = "intake"
    ADMIN = "admin"
    CLIENT = "client"


@dataclass(frozen=True)
class Caller:
    role: Role
    #: For an intake key, the source system it names.
    source: str | None = None
    #: For a client key, the one client whose documents it reads.
    client_id: str | None = None
    #: Who the key is in an audit entry (SPEC §13): `admin:` + the first 8 hex digits of the
    #: key's SHA-256, `client:<client_id>`, `intake:<source>`.
    name: str = ""


def admin_name(key: str) -> str:
    """An admin key as audit entries name it: never the key, enough to tell two apart."""
    return "admin:" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_admin_keys(value: str) -> list[str]:
    """`key,key` → [key, key]: several admin keys let one be rotated without downtime."""
    keys: list[str] = []
    for key in filter(None, (part.strip() for part in value.split(","))):
        if len(key) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(
                f"every admin key must have at least {MIN_ADMIN_KEY_LENGTH} characters "
                f"(key {len(keys) + 1} of the list has {len(key)})"
            )
        if key in keys:
            raise ValueError(f"key {len(keys) + 1} of the list is given twice")
        keys.append(key)
    if not keys:
        raise ValueError("must hold at least one key")
    return keys


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


def parse_client_keys(value: str) -> dict[str, str]:
    """`client_id=key,client_id=key` → {key: client_id}; empty when unset (client keys are
    optional)."""
    keys: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        client, sep, key = entry.partition("=")
        client, key = client.strip(), key.strip()
        if not sep or not client or not key:
            raise ValueError(f"entry {entry!r} is not client_id=key")
        if not is_client_id(client):
            raise ValueError(f"{client!r} is not a client id ({CLIENT_ID_PATTERN})")
        if key in keys:
            raise ValueError(f"a key is given twice (clients {keys[key]!r} and {client!r})")
        keys[key] = client
    return keys


def _refuse_published(keys: list[str]) -> None:
    for key in keys:
        if key in PUBLISHED_DEFAULT_KEYS or key.lower().startswith("change-me"):
            raise ValueError(
                "holds a published default key; set a secret of your own "
                "(only the local run command, ./tierline up, may use defaults)"
            )


class KeySettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    tierline_admin_key: str
    tierline_intake_keys: str
    tierline_client_keys: str = ""
    #: Set by the local run command (`./tierline up`) only: published default keys are allowed.
    tierline_local_run: bool = False

    @field_validator("tierline_admin_key")
    @classmethod
    def _admin_well_formed(cls, value: str) -> str:
        parse_admin_keys(value)
        return value

    @field_validator("tierline_intake_keys")
    @classmethod
    def _intake_well_formed(cls, value: str) -> str:
        parse_intake_keys(value)
        return value

    @field_validator("tierline_client_keys")
    @classmethod
    def _client_well_formed(cls, value: str) -> str:
        parse_client_keys(value)
        return value

    @model_validator(mode="after")
    def _no_shared_or_published_keys(self) -> Self:
        admin = parse_admin_keys(self.tierline_admin_key)
        intake = parse_intake_keys(self.tierline_intake_keys)
        client = parse_client_keys(self.tierline_client_keys)
        # A problem spanning variables has no single field: the message names the variable.
        if set(admin) & set(intake):
            raise ValueError("TIERLINE_INTAKE_KEYS holds a key that TIERLINE_ADMIN_KEY holds too")
        if set(client) & (set(admin) | set(intake)):
            raise ValueError(
                "TIERLINE_CLIENT_KEYS holds a key that TIERLINE_ADMIN_KEY or "
                "TIERLINE_INTAKE_KEYS holds too"
            )
        if not self.tierline_local_run:
            for variable, keys in (
                ("TIERLINE_ADMIN_KEY", admin),
                ("TIERLINE_INTAKE_KEYS", list(intake)),
                ("TIERLINE_CLIENT_KEYS", list(client)),
            ):
                try:
                    _refuse_published(keys)
                except ValueError as error:
                    raise ValueError(f"{variable} {error}") from None
        return self


class KeyRing:
    def __init__(
        self,
        *,
        intake_keys: dict[str, str],
        admin_keys: Sequence[str] = (),
        admin_key: str | None = None,
        client_keys: dict[str, str] | None = None,
    ) -> None:
        admins = [*admin_keys, *([admin_key] if admin_key else [])]
        self._keys: list[tuple[bytes, Caller]] = [
            (key.encode(), Caller(Role.ADMIN, name=admin_name(key))) for key in admins
        ]
        self._keys += [
            (key.encode(), Caller(Role.INTAKE, source, name=f"intake:{source}"))
            for key, source in intake_keys.items()
        ]
        self._keys += [
            (key.encode(), Caller(Role.CLIENT, client_id=client, name=f"client:{client}"))
            for key, client in (client_keys or {}).items()
        ]

    @classmethod
    def from_settings(cls, settings: KeySettings) -> KeyRing:
        return cls(
            admin_keys=parse_admin_keys(settings.tierline_admin_key),
            intake_keys=parse_intake_keys(settings.tierline_intake_keys),
            client_keys=parse_client_keys(settings.tierline_client_keys),
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
