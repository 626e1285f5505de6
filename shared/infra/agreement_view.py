"""Each service's own view of the current agreements, read from the compacted `agreements` topic."""

from __future__ import annotations

from typing import Protocol

from shared.contracts.topics import AGREEMENTS
from shared.domain.agreement.agreement import Agreement
from shared.infra.kafka import CompactedView
from shared.infra.kafka_connection import KafkaConnection


class Agreements(Protocol):
    """What a service reads of its view: the agreement in force for a client, if any (a
    CompactedView[Agreement] in production, a dict's `get` or a fake in tests)."""

    def get(self, client_id: str, /) -> Agreement | None: ...


class AgreementView(Agreements, Protocol):
    """A view that can also say it has caught up with what the topic holds now."""

    async def caught_up(self) -> None: ...


def agreement_from_message(raw: bytes) -> Agreement:
    return Agreement.model_validate_json(raw)


def client_of(agreement: Agreement) -> str:
    return agreement.client_id


def is_newer(candidate: Agreement, current: Agreement) -> bool:
    """A republished older version (outbox retry) must never replace a newer one."""
    return (candidate.version or 0) >= (current.version or 0)


def agreement_view(kafka: KafkaConnection, *, service: str) -> CompactedView[Agreement]:
    """The view `service` keeps. A record that is no valid agreement, or whose key is not its
    body's `client_id`, is never applied: `service` dead-letters it to `agreements.dlq` (once)."""
    return CompactedView(
        kafka,
        AGREEMENTS,
        agreement_from_message,
        newer=is_newer,
        key_of=client_of,
        dead_lettered_by=service,
    )
