"""Reclassifications on a real PostgreSQL (SPEC §10): the counts move with the items in one
transaction, an id is made once (replays and races), and a closed, invoiced period owes billing
a note — issued with the period's billed total, so nothing is billed twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import asyncpg
import msgspec
import pytest

from services.billing import store as billing_store
from services.billing.closing import close_for_client
from services.billing.noting import issue_due_notes
from services.metering.counting import MeteredItem
from services.metering.reclassifying import Conflict, Reclassifier
from shared.contracts.reclassification import ReclassificationRequest
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.periods import parse_period
from shared.ledger.locks import lock_for_close
from shared.ledger.reads import counts_between, notes_due
from tests.integration.test_metering_store import meter_batch, utc
from tests.spec_example import spec_body

OCTOBER = parse_period("2026-10")
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


class Meter:
    """What the reclassifier asks of metering's batch handler: its usage cache and alerts."""

    def __init__(self) -> None:
        from services.metering.alerts import PeriodUsageCache
        from services.metering.level_alerts import WatchList

        self.usage_cache = PeriodUsageCache()
        self.level_watch = WatchList()
        self.alerts_pending = False
        self.published = 0

    async def publish_alerts(self) -> None:
        self.published += 1


class Agreements:
    def __init__(self, agreement: Agreement | None) -> None:
        self.agreement = agreement

    def get(self, client_id: str) -> Agreement | None:
        return self.agreement


def acme(client: str) -> Agreement:
    body = spec_body(client)
    body["timezone"] = "UTC"
    return parse_agreement(body).with_version(1)


def item(client: str, n: int, line: str, complexity: str, **fields: Any) -> MeteredItem:
    base: dict[str, Any] = {
        "client_id": client,
        "item_id": f"T-{n:04d}",
        "completed_at": START + timedelta(minutes=n),
        "service_line": line,
        "complexity": complexity,
        "units": 1,
        "handling_seconds": 120,
        "rule_id": "r",
        "agreement_version": 1,
        "source": "jira",
    }
    return MeteredItem(**{**base, **fields})


def request(
    client: str, ident: str, **fields: Any
) -> tuple[ReclassificationRequest, dict[str, Any]]:
    body = {
        "id": ident,
        "client_id": client,
        "period": "2026-10",
        "match": {"service_line": "accounting"},
        "to": {"service_line": "hr", "complexity": "basic"},
        "reason": "wrong line",
        **fields,
    }
    return ReclassificationRequest.model_validate(body), body


def reclassifier(pool: asyncpg.Pool, agreement: Agreement | None) -> Reclassifier:
    return Reclassifier(pool, Agreements(agreement), cast(Any, Meter()), note_wait_seconds=0.1)


async def by_class(pool: asyncpg.Pool, client: str) -> dict[tuple[str, str], tuple[int, int]]:
    counts = await counts_between(pool, client, START, END)
    # A class the reclassification emptied is not read back (an invoice would show it).
    return {(c.service_line, c.complexity): (c.items, c.late_items) for c in counts}


@pytest.fixture
def client() -> str:
    return f"rc-{uuid.uuid4().hex[:8]}"


async def test_counts_move_with_the_items_and_an_id_is_made_once(
    pool: asyncpg.Pool, client: str
) -> None:
    batch = [item(client, n, "accounting", "complex") for n in range(30)]
    batch += [item(client, 100 + n, "customer_support", "basic") for n in range(5)]
    await meter_batch(pool, batch, timezone_of=utc)
    made = reclassifier(pool, acme(client))
    wanted, body = request(client, "rc-1")

    # Two at once with the same id: one moves, the other answers the same.
    first, second = await asyncio.gather(
        *(
            made.reclassify(wanted, body, period=OCTOBER, made_by="admin:0000abcd", now=NOW)
            for _ in range(2)
        )
    )
    assert first == second
    assert (first.items, first.period_status) == (30, "open")
    assert await by_class(pool, client) == {
        ("hr", "basic"): (30, 0),
        ("customer_support", "basic"): (5, 0),
    }
    history = await pool.fetch(
        "SELECT * FROM metering.item_history WHERE client_id = $1 ORDER BY seq", client
    )
    assert len(history) == 30
    assert (history[0]["from_line"], history[0]["to_line"], history[0]["reason"]) == (
        "accounting",
        "hr",
        "wrong line",
    )
    rule_ids = await pool.fetch(
        "SELECT DISTINCT rule_id, agreement_version FROM metering.items "
        "WHERE client_id = $1 AND service_line = 'hr'",
        client,
    )
    assert [tuple(r) for r in rule_ids] == [("reclassification:rc-1", 1)]
    audit = await pool.fetch(
        "SELECT made_by, note_due FROM metering.reclassifications WHERE client_id = $1", client
    )
    assert [tuple(r) for r in audit] == [("admin:0000abcd", False)]

    # The same id with another body is a conflict, and moves nothing.
    other, other_body = request(client, "rc-1", reason="another reason")
    with pytest.raises(Conflict):
        await made.reclassify(other, other_body, period=OCTOBER, made_by="x", now=NOW)
    assert await by_class(pool, client) == {
        ("hr", "basic"): (30, 0),
        ("customer_support", "basic"): (5, 0),
    }


async def owes_a_note(pool: asyncpg.Pool, client: str) -> Agreement:
    """October closed and invoiced at 90000.00, then a reclassification moves 14 of its items
    (2 of them late): a note is owed."""
    agreement = acme(client)
    # SPEC §6 example 3: 600 care + 150 keying + 12 complex accounting → Enterprise 90000.00.
    batch = [item(client, n, "customer_support", "basic") for n in range(600)]
    batch += [item(client, 1000 + n, "data_entry", "standard") for n in range(150)]
    batch += [item(client, 2000 + n, "accounting", "complex") for n in range(12)]
    await meter_batch(pool, batch, timezone_of=utc)
    await pool.execute(
        """INSERT INTO billing.agreements (client_id, version, body, published)
           VALUES ($1, 1, $2, true)""",
        client,
        agreement.to_wire(),
    )
    await pool.execute(
        """INSERT INTO billing.closed_periods (client_id, period, invoice_id, agreement_version,
                                               items, billed_total, late_items_settled)
           VALUES ($1, '2026-10', $2, 1, 762, 90000.00, 0)""",
        client,
        f"{client}-2026-10-1",
    )
    late = [item(client, 3000 + n, "accounting", "complex", late=True) for n in range(2)]
    await meter_batch(pool, late, timezone_of=utc)  # flagged late: the period is closed

    made = reclassifier(pool, agreement)
    wanted, body = request(
        client, "rc-closed", match={"service_line": "accounting", "complexity": "complex"},
        to={"service_line": "accounting", "complexity": "standard"},
    )  # fmt: skip
    done = await made.reclassify(wanted, body, period=OCTOBER, made_by="a", now=NOW)
    assert (done.items, done.period_status) == (14, "closed")
    assert [n.reclassification for n in await notes_due(pool, client)] == ["rc-closed"]
    return agreement


async def test_a_closed_invoiced_period_owes_a_note_billed_once(
    pool: asyncpg.Pool, client: str
) -> None:
    await owes_a_note(pool, client)
    async with pool.acquire() as conn, conn.transaction():
        await lock_for_close(conn, client)
        [note] = await issue_due_notes(conn, client, NOW)
    # 600 + 300 + 14 × 2 = 928 → Professional (scope: accounting/standard) = 35000.00
    assert (note.note_id, note.total) == (f"{client}-2026-10-n1", Decimal("-55000.00"))
    row = await pool.fetchrow(
        "SELECT billed_total, late_items_settled FROM billing.closed_periods WHERE client_id = $1",
        client,
    )
    assert row is not None
    assert (row["billed_total"], row["late_items_settled"]) == (Decimal("35000.00"), 0)
    # Issued once: nothing is owed any more, whoever asks again.
    assert await notes_due(pool, client) == []
    async with pool.acquire() as conn, conn.transaction():
        await lock_for_close(conn, client)
        assert await issue_due_notes(conn, client, NOW) == []


async def test_the_review_queue_moves_into_classes_by_the_rules(
    pool: asyncpg.Pool, client: str
) -> None:
    lost = [
        item(client, n, "unclassified", "none", rule_id=None, agreement_version=None,
             facts=msgspec.Raw(b'{"title": "Password reset for Ann"}'))
        for n in range(3)
    ]  # fmt: skip
    await meter_batch(pool, lost, timezone_of=utc)
    wanted, body = request(client, "q", match={"status": "unclassified"}, to="rules")
    done = await reclassifier(pool, acme(client)).reclassify(
        wanted, body, period=OCTOBER, made_by="a", now=NOW
    )
    assert [(m.from_, m.to and m.to.service_line, m.items) for m in done.moved] == [
        (None, "it_support", 3)
    ]
    assert await by_class(pool, client) == {("it_support", "basic"): (3, 0)}
    rows = await pool.fetch(
        "SELECT DISTINCT rule_id, agreement_version FROM metering.items WHERE client_id = $1",
        client,
    )
    assert [tuple(r) for r in rows] == [("password-reset", 1)]


async def test_a_close_issues_what_the_client_is_owed_first(
    pool: asyncpg.Pool, client: str
) -> None:
    """The close's first round trip says a note is owed; the close issues it before it reads
    the closed periods it rates against, so November's close sees October at what the note
    billed."""
    agreement = await owes_a_note(pool, client)
    async with pool.acquire() as conn, conn.transaction():
        start = await billing_store.lock_and_read_for_close(conn, client)
    assert start.notes_owed
    assert start.agreement is not None and start.agreement.version == agreement.version
    assert start.closed["2026-10"].billed_total == Decimal("90000.00")  # exact through JSON

    async with pool.acquire() as conn:
        outcome = await close_for_client(
            conn, client_id=client, period=parse_period("2026-11"), now=NOW
        )
    assert outcome.newly_closed
    assert await notes_due(pool, client) == []
    async with pool.acquire() as conn, conn.transaction():
        start = await billing_store.lock_and_read_for_close(conn, client)
    assert not start.notes_owed
    assert start.closed["2026-10"].billed_total == Decimal("35000.00")
