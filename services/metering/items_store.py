"""The items API's SQL (SPEC §10 "Items"): one item, a page, and the two exports.

Every listing walks the index `items_by_time (client_id, completed_at, item_id COLLATE "C")` in
its order — by instant, then id in code-point order — from a position (keyset paging): a page
costs its own rows whatever page it is, and an export streams without sorting anything.

The CSV export is written by PostgreSQL itself (`COPY (SELECT ...) TO STDOUT WITH (FORMAT csv,
HEADER)`), each column formatted in SQL as `items.item_document` formats it in Python: timestamps
as `wire.utc_instant` (UTC, `Z`, fractional seconds without trailing zeros, only when non-zero),
the class, status, rule and weighted units from the domain's classes and `items.ClassWeights`
(passed as parameters), booleans `true`/`false`, null as an empty cell.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, Final

import asyncpg

from services.metering.items import (
    ClassWeights,
    ItemSelection,
    Position,
    StoredChange,
    StoredItem,
)
from shared.contracts.items import CSV_COLUMNS
from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES
from shared.infra.db import Connection

#: An item with what its document shows of its changes.
Found = tuple[StoredItem, list[StoredChange]]

_COLUMNS: Final = """i.client_id, i.item_id, i.source, i.completed_at, i.opened_at, i.received_at,
       i.late, i.service_line, i.complexity, i.rule_id, i.agreement_version, i.units,
       i.handling_seconds"""

_ONE: Final = f"""
SELECT {_COLUMNS}
  FROM metering.items i
 WHERE i.client_id = $1 AND i.item_id = $2"""

_HISTORY: Final = """
SELECT item_id, at, from_line, from_complexity, to_line, to_complexity, reclassification, reason
  FROM metering.item_history
 WHERE client_id = $1 AND item_id = ANY($2::text[])
 ORDER BY item_id, seq"""

#: Whether a row is of a class the agreements know (`usage.class_of`): $8 the service lines,
#: $9 the complexities.
_LINE: Final = "array_position($8::text[], i.service_line)"
_COMPLEXITY: Final = "array_position($9::text[], i.complexity)"
_CLASSIFIED: Final = f"({_LINE} IS NOT NULL AND {_COMPLEXITY} IS NOT NULL)"

#: $1..$3 the client and [start, end); $4..$7 the filters (null: any); $10, $11 the position
#: the listing starts after. The row comparison and the order are the index's.
_SELECTED: Final = f"""
  FROM metering.items i
 WHERE i.client_id = $1 AND i.completed_at >= $2::timestamptz AND i.completed_at < $3::timestamptz
   AND (i.completed_at, i.item_id COLLATE "C") > ($10::timestamptz, $11::text COLLATE "C")
   AND ($4::text IS NULL OR i.service_line = $4::text)
   AND ($5::text IS NULL OR i.complexity = $5::text)
   AND ($6::text IS NULL OR (i.rule_id = $6::text AND {_CLASSIFIED}))
   AND ($7::boolean IS NULL OR $7::boolean = {_CLASSIFIED})
 ORDER BY i.completed_at, i.item_id COLLATE "C\""""

#: A page ($12 rows; null: all of them).
_PAGE: Final = f"SELECT {_COLUMNS}{_SELECTED}\n LIMIT $12::bigint"


def _instant(column: str) -> str:
    """`wire.utc_instant` in SQL: a timestamp's text under DateStyle ISO (`_EXPORT_SETTINGS`) is
    `2026-10-05 10:00:00.25`, fractional seconds only when non-zero and without trailing zeros
    (and several times cheaper than `to_char`)."""
    return f"replace(({column} AT TIME ZONE 'UTC')::text, ' ', 'T') || 'Z'"


#: An export's transaction: timestamps written as `_instant` expects whatever the server's
#: default DateStyle; no JIT (it costs its compilation and gains nothing on this plan).
_EXPORT_SETTINGS: Final = "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL jit = off"


#: Each CSV column as SQL; $12 is the period key, $13/$14 `ClassWeights.per_item`/`per_unit`
#: (indexed line-major, 1-based, like $8 × $9).
_WEIGHT_INDEX: Final = f"(({_LINE} - 1) * {len(COMPLEXITIES)} + {_COMPLEXITY})"
_CSV_EXPRESSIONS: Final = {
    "client_id": "i.client_id",
    "id": "i.item_id",
    "source": "i.source",
    "completed_at": _instant("i.completed_at"),
    "opened_at": _instant("i.opened_at"),
    "received_at": _instant("i.received_at"),
    "period": "$12::text",
    "late": "CASE WHEN i.late THEN 'true' ELSE 'false' END",
    "status": f"CASE WHEN {_CLASSIFIED} THEN 'classified' ELSE 'unclassified' END",
    "service_line": f"CASE WHEN {_CLASSIFIED} THEN i.service_line END",
    "complexity": f"CASE WHEN {_CLASSIFIED} THEN i.complexity END",
    "rule_id": f"CASE WHEN {_CLASSIFIED} THEN i.rule_id END",
    "agreement_version": "i.agreement_version",
    "units": "i.units",
    "handling_seconds": "i.handling_seconds",
    "weighted_units": (
        f"coalesce(trim_scale(($13::numeric[])[{_WEIGHT_INDEX}]"
        f" + ($14::numeric[])[{_WEIGHT_INDEX}] * i.units)::text, '0')"
    ),
}
_CSV: Final = (
    "SELECT "
    + ",\n       ".join(f'{_CSV_EXPRESSIONS[name]} AS "{name}"' for name in CSV_COLUMNS)
    + _SELECTED
)


def _selected(selection: ItemSelection, after: Position) -> list[Any]:
    """$1..$11 of `_SELECTED`."""
    classified = None if selection.status is None else selection.status == "classified"
    return [
        selection.client_id,
        selection.start,
        selection.end,
        selection.service_line,
        selection.complexity,
        selection.rule_id,
        classified,
        list(SERVICE_LINES),
        list(COMPLEXITIES),
        after.completed_at,
        after.item_id,
    ]


async def find_item(pool: asyncpg.Pool, client_id: str, item_id: str) -> Found | None:
    """One item and its changes of class, or None when it was never metered."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        row = await conn.fetchrow(_ONE, client_id, item_id)
        if row is None:
            return None
        history = await _history(conn, client_id, [item_id])
    return StoredItem(*row), history.get(item_id, [])


async def page(
    pool: asyncpg.Pool, selection: ItemSelection, after: Position, limit: int
) -> list[Found]:
    """Up to `limit` selected items after `after`, in order, each with its changes."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        rows = await conn.fetch(_PAGE, *_selected(selection, after), limit)
        return await _with_history(conn, selection.client_id, rows)


async def export(
    pool: asyncpg.Pool, selection: ItemSelection, *, batch: int
) -> AsyncGenerator[list[Found], None]:
    """Every selected item in order, `batch` at a time, from a server-side cursor (one
    connection and one snapshot for the whole export; memory bounded by the batch)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(_EXPORT_SETTINGS)
        cursor = await conn.cursor(_PAGE, *_selected(selection, selection.first()), None)
        while rows := await cursor.fetch(batch):
            yield await _with_history(conn, selection.client_id, rows)


async def copy_csv(
    pool: asyncpg.Pool,
    selection: ItemSelection,
    weights: ClassWeights,
    *,
    output: Callable[[bytes], Coroutine[Any, Any, None]],
    timeout: float,
) -> None:
    """The CSV export, header first, written by PostgreSQL in chunks to `output` (which may
    wait: asyncpg then stops reading, and the server waits too). `timeout` bounds the whole
    COPY (asyncpg would otherwise hold it to the pool's command timeout)."""

    async def write(data: bytes) -> None:
        # asyncpg hands over a view of its own buffer, which it reuses once this returns.
        await output(bytes(data))

    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(_EXPORT_SETTINGS)
        await conn.copy_from_query(
            _CSV,
            *_selected(selection, selection.first()),
            selection.period,
            list(weights.per_item),
            list(weights.per_unit),
            output=write,
            format="csv",
            header=True,
            timeout=timeout,
        )


async def _with_history(
    conn: Connection, client_id: str, rows: list[asyncpg.Record]
) -> list[Found]:
    items = [StoredItem(*row) for row in rows]
    history = await _history(conn, client_id, [item.item_id for item in items])
    return [(item, history.get(item.item_id, [])) for item in items]


async def _history(
    conn: Connection, client_id: str, item_ids: list[str]
) -> dict[str, list[StoredChange]]:
    """The changes of class of these items, each item's oldest first."""
    if not item_ids:
        return {}
    found: dict[str, list[StoredChange]] = {}
    for row in await conn.fetch(_HISTORY, client_id, item_ids):
        found.setdefault(row["item_id"], []).append(StoredChange(*row))
    return found
