"""Items written straight into metering's ledger (`metering.items`, `metering.item_history`) with
COPY, as metering would have kept them: for the items API's tests and its benchmark
(bench/export.py), which need many items, exact fields and changes of class without running the
pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Final

import asyncpg

_ITEM_COLUMNS: Final = (
    "client_id",
    "item_id",
    "completed_at",
    "service_line",
    "complexity",
    "units",
    "rule_id",
    "agreement_version",
    "late",
    "received_at",
    "source",
    "opened_at",
    "handling_seconds",
)


@dataclass(frozen=True)
class LedgerItem:
    """A row of `metering.items` (`service_line` "unclassified" and `complexity` "none" for an
    item the classifier could not place)."""

    client_id: str
    item_id: str
    completed_at: datetime
    service_line: str = "customer_support"
    complexity: str = "basic"
    units: int = 1
    rule_id: str | None = "cs"
    agreement_version: int | None = 1
    late: bool = False
    received_at: datetime | None = None
    source: str | None = "jira"
    opened_at: datetime | None = None
    handling_seconds: int | None = None

    def row(self) -> tuple[object, ...]:
        """The row in `_ITEM_COLUMNS` order (`dataclasses.astuple` would deep-copy each value)."""
        return (
            self.client_id,
            self.item_id,
            self.completed_at,
            self.service_line,
            self.complexity,
            self.units,
            self.rule_id,
            self.agreement_version,
            self.late,
            self.received_at,
            self.source,
            self.opened_at,
            self.handling_seconds,
        )


@dataclass(frozen=True)
class LedgerChange:
    """A row of `metering.item_history`: one change of an item's class."""

    client_id: str
    item_id: str
    at: datetime
    from_line: str
    from_complexity: str
    to_line: str
    to_complexity: str
    reclassification: str = "rc-1"
    reason: str = "a test"


async def seed_items(pool: asyncpg.Pool, items: Iterable[LedgerItem]) -> None:
    await pool.copy_records_to_table(
        "items",
        schema_name="metering",
        records=(item.row() for item in items),
        columns=list(_ITEM_COLUMNS),
    )


async def seed_changes(pool: asyncpg.Pool, changes: Iterable[LedgerChange]) -> None:
    """Changes in the order given (each gets the next `seq`: oldest first)."""
    await pool.copy_records_to_table(
        "item_history",
        schema_name="metering",
        records=[astuple(change) for change in changes],
        columns=[
            "client_id",
            "item_id",
            "at",
            "from_line",
            "from_complexity",
            "to_line",
            "to_complexity",
            "reclassification",
            "reason",
        ],
    )
