"""A reclassification's SQL (SPEC §10), in one transaction: read → `reclassify.plan` → write.

Under the client's reclassification lock (one at a time per client) and its close lock held
shared (as every metering writer holds it: a close of the client waits, and sees all of it or
none), the matched items are read, the plan moves them, and one statement each writes the items'
new classes, their history, the counters' deltas and the audit record. A note is owed when the
period is closed and invoiced; billing is told with a NOTIFY that reaches it at commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.metering.counting import decode_facts
from services.metering.reclassify import Plan, StoredItem, columns_of
from shared.contracts.reclassification import ReclassificationAnswer, ReclassificationRecord
from shared.domain.usage import ClassCount
from shared.infra.db import Connection, Executor
from shared.ledger.locks import LOCK_AND_READ_CLOSED, lock_for_reclassification
from shared.ledger.reads import NOTES_CHANNEL, counts_between


@dataclass(frozen=True)
class Earlier:
    """A reclassification with this id already made: its body and its first answer."""

    body: dict[str, Any]
    answer: dict[str, Any]


@dataclass(frozen=True)
class PeriodState:
    closed: bool
    #: Closed with an invoice (not unbilled): a move owes a note.
    invoiced: bool


async def earlier(conn: Executor, client_id: str, reclassification_id: str) -> Earlier | None:
    row = await conn.fetchrow(
        """SELECT body, answer FROM metering.reclassifications WHERE client_id = $1 AND id = $2""",
        client_id,
        reclassification_id,
    )
    if row is None:
        return None
    return Earlier(row["body"], row["answer"])


async def lock(conn: Connection, client_id: str, period: str) -> PeriodState:
    """First in the transaction: the client's reclassification lock, then its close lock
    shared; then whether the period is closed, and invoiced."""
    await lock_for_reclassification(conn, client_id)
    closed = {p for _, p in await conn.fetch(LOCK_AND_READ_CLOSED, [client_id])}
    if period not in closed:
        return PeriodState(closed=False, invoiced=False)
    invoice = await conn.fetchval(
        """SELECT invoice_id FROM billing.closed_periods WHERE client_id = $1 AND period = $2""",
        client_id,
        period,
    )
    return PeriodState(closed=True, invoiced=invoice is not None)


@dataclass(frozen=True)
class Selection:
    """Which of a client's items in [start, end) a reclassification matches."""

    client_id: str
    start: datetime
    end: datetime
    service_line: str | None = None
    complexity: str | None = None
    rule_id: str | None = None
    classified: bool | None = None
    item_ids: list[str] | None = None


_MATCHED = """
SELECT item_id, completed_at, service_line, complexity, units, handling_seconds, rule_id,
       agreement_version, late, source, CASE WHEN $9 THEN facts END AS facts
  FROM metering.items
 WHERE client_id = $1 AND completed_at >= $2 AND completed_at < $3
   AND ($4::text IS NULL OR service_line = $4)
   AND ($5::text IS NULL OR complexity = $5)
   AND ($6::text IS NULL OR rule_id = $6)
   AND ($7::bool IS NULL OR (service_line <> 'unclassified') = $7)
   AND ($8::text[] IS NULL OR item_id = ANY ($8))
 ORDER BY completed_at, item_id
"""


async def matched(conn: Connection, selection: Selection, *, with_facts: bool) -> list[StoredItem]:
    """The matched items (with what the rules read when `with_facts`), locked until commit."""
    s = selection
    rows = await conn.fetch(
        _MATCHED + " FOR UPDATE",
        s.client_id,
        s.start,
        s.end,
        s.service_line,
        s.complexity,
        s.rule_id,
        s.classified,
        s.item_ids,
        with_facts,
    )
    return [
        StoredItem(
            item_id=r["item_id"],
            completed_at=r["completed_at"],
            service_line=r["service_line"],
            complexity=r["complexity"],
            units=r["units"],
            handling_seconds=r["handling_seconds"],
            rule_id=r["rule_id"],
            agreement_version=r["agreement_version"],
            late=r["late"],
            source=r["source"],
            facts=None if r["facts"] is None else decode_facts(r["facts"]),
        )
        for r in rows
    ]


async def period_counts(
    conn: Connection, client_id: str, start: datetime, end: datetime
) -> list[ClassCount]:
    return await counts_between(conn, client_id, start, end)


_MOVE_ITEMS = """
UPDATE metering.items AS i
   SET service_line = u.service_line, complexity = u.complexity, rule_id = u.rule_id,
       agreement_version = u.agreement_version
  FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int[])
       AS u(item_id, service_line, complexity, rule_id, agreement_version)
 WHERE i.client_id = $1 AND i.item_id = u.item_id
"""

_HISTORY = """
INSERT INTO metering.item_history (client_id, item_id, at, from_line, from_complexity, to_line,
                                   to_complexity, reclassification, reason)
SELECT $1, u.item_id, $2, u.from_line, u.from_complexity, u.to_line, u.to_complexity, $3, $4
  FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
       WITH ORDINALITY AS u(item_id, from_line, from_complexity, to_line, to_complexity, n)
 ORDER BY u.n
"""

_COUNTERS = """
INSERT INTO metering.usage_days AS s (client_id, day, service_line, complexity, items, units,
                                      handling_seconds, late_items)
SELECT $1, d.day, d.service_line, d.complexity, d.items, d.units, d.handling_seconds,
       d.late_items
  FROM unnest($2::timestamptz[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
              $7::bigint[], $8::bigint[])
       AS d(day, service_line, complexity, items, units, handling_seconds, late_items)
 ORDER BY 1, 2, 3, 4
ON CONFLICT (client_id, day, service_line, complexity) DO UPDATE
   SET items = s.items + excluded.items,
       units = s.units + excluded.units,
       handling_seconds = s.handling_seconds + excluded.handling_seconds,
       late_items = s.late_items + excluded.late_items
"""


async def write(
    conn: Connection,
    *,
    client_id: str,
    reclassification_id: str,
    reason: str,
    plan: Plan,
    at: datetime,
) -> None:
    """The moves, their history and the counters' deltas (three statements)."""
    if not plan.moves:
        return
    moves = plan.moves
    targets = [columns_of(m.to) for m in moves]
    sources = [columns_of(m.item.place) for m in moves]
    ids = [m.item.item_id for m in moves]
    await conn.execute(
        _MOVE_ITEMS,
        client_id,
        ids,
        [t[0] for t in targets],
        [t[1] for t in targets],
        [m.rule_id for m in moves],
        [m.agreement_version for m in moves],
    )
    await conn.execute(
        _HISTORY,
        client_id,
        at,
        reclassification_id,
        reason,
        ids,
        [s[0] for s in sources],
        [s[1] for s in sources],
        [t[0] for t in targets],
        [t[1] for t in targets],
    )
    deltas = plan.deltas
    places = [columns_of(d.place) for d in deltas]
    await conn.execute(
        _COUNTERS,
        client_id,
        [d.day for d in deltas],
        [p[0] for p in places],
        [p[1] for p in places],
        [d.items for d in deltas],
        [d.units for d in deltas],
        [d.handling_seconds for d in deltas],
        [d.late_items for d in deltas],
    )


async def record(
    conn: Connection,
    *,
    body: dict[str, Any],
    answer: ReclassificationAnswer,
    made_by: str,
    made_at: datetime,
    note_due: bool,
    late_delta: int,
) -> None:
    """The audit record (and the idempotency record of its id); tells billing when a note is
    owed (delivered at commit)."""
    await conn.execute(
        """INSERT INTO metering.reclassifications
               (client_id, id, period, body, answer, made_by, made_at, note_due, late_delta)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        answer.client_id,
        answer.id,
        answer.period,
        body,
        answer.model_dump(mode="json"),
        made_by,
        made_at,
        note_due,
        late_delta,
    )
    if note_due:
        await conn.execute("SELECT pg_notify($1, $2)", NOTES_CHANNEL, answer.client_id)


async def by_period(
    conn: Executor, client_id: str, period: str | None
) -> list[ReclassificationRecord]:
    """The client's reclassifications (of `period` when given), oldest first."""
    rows = await conn.fetch(
        """SELECT id, client_id, period, body, answer, made_by, made_at
             FROM metering.reclassifications
            WHERE client_id = $1 AND ($2::text IS NULL OR period = $2)
            ORDER BY seq""",
        client_id,
        period,
    )
    records = []
    for r in rows:
        answer: dict[str, Any] = r["answer"]
        records.append(
            ReclassificationRecord.model_validate(
                {
                    "id": r["id"],
                    "client_id": r["client_id"],
                    "period": r["period"],
                    "made_by": r["made_by"],
                    "made_at": r["made_at"],
                    "body": r["body"],
                    "items": answer["items"],
                    "moved": answer["moved"],
                    "period_status": answer["period_status"],
                }
            )
        )
    return records
