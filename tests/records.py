"""Work-item records as the pipeline's topics carry them, for tests that write them to Kafka or
hand them to a handler: a completed item (`workitems.completed`) and its classified copy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: When the test items were completed and received.
AT = datetime(2026, 10, 5, 9, 30, tzinfo=UTC)


def completed_record(
    item_id: str, *, client: str = "acme", queue: str = "Customer Care", **fields: Any
) -> dict[str, Any]:
    """A `workitems.completed` record, completed and received at AT; `fields` add or replace."""
    return {
        "id": item_id,
        "client_id": client,
        "source": "zendesk",
        "completed_at": AT.isoformat(),
        "received_at": AT.isoformat(),
        "key_source": "zendesk",
        "queue": queue,
        **fields,
    }


def classified_record(
    item_id: str, *, client: str = "acme", rule_id: str = "cs", **fields: Any
) -> dict[str, Any]:
    """Its `workitems.classified` copy: customer_support/basic by `rule_id`, agreement v1."""
    return completed_record(
        item_id,
        client=client,
        **{
            "service_line": "customer_support",
            "complexity": "basic",
            "rule_id": rule_id,
            "agreement_version": 1,
            **fields,
        },
    )
