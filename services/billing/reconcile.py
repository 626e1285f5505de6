"""Which clients' current agreement the compacted `agreements` topic no longer carries. Pure.

Billing is the only writer of `agreements`, but not the only possible one: a record someone else
writes under a client's key is refused by every consumer (it is dead-lettered), yet compaction
keeps only the latest record per key — so in time it would erase the real agreement from the
topic, and a service that restarts would find none. Billing compares the topic's latest record
per key with each client's current stored version and republishes those that differ.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from shared.domain.agreement.agreement import Agreement


def carries(record: bytes | None, agreement: Agreement) -> bool:
    """Whether `record` (the topic's latest value under the agreement's key) is that agreement:
    the same client and version. None (no record, or a tombstone) carries nothing."""
    if record is None:
        return False
    try:
        body = orjson.loads(record)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(body, dict)
        and body.get("client_id") == agreement.client_id
        and body.get("version") == agreement.version
    )


def to_republish(
    current: Mapping[str, Agreement], on_topic: Mapping[str, bytes | None]
) -> list[Agreement]:
    """The current agreements the topic does not carry, by client id."""
    return [
        agreement
        for client_id, agreement in sorted(current.items())
        if not carries(on_topic.get(client_id), agreement)
    ]
