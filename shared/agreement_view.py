"""Each service's own view of the current agreements, read from the compacted `agreements` topic."""

from __future__ import annotations

from shared.agreements import Agreement
from shared.events import AGREEMENTS
from shared.kafka import CompactedView


def agreement_from_message(raw: bytes) -> Agreement:
    return Agreement.model_validate_json(raw)


def is_newer(candidate: Agreement, current: Agreement) -> bool:
    """A republished older version (outbox retry) must never replace a newer one."""
    return (candidate.version or 0) >= (current.version or 0)


def agreement_view(bootstrap_servers: str) -> CompactedView[Agreement]:
    return CompactedView(bootstrap_servers, AGREEMENTS, agreement_from_message, newer=is_newer)
