"""Billing's close and its store on a real PostgreSQL (SPEC §6): re-closing, unbilled clients, late
adjustments only for the periods that changed, and the close lock — scoped to the client being
closed, and an item of that client in the invoice or late, never neither."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.billing import store
from services.billing.close_decision import Close
from services.billing.closing import CloseOutcome, close_for_client
from services.metering import store as metering_store
from services.metering.counting import MeteredItem
from shared.contracts.invoice import Unbilled
from shared.domain.agreement.agreement import parse_agreement
from shared.domain.periods import parse_period, period_bounds
from shared.infra.db import Connection
from shared.ledger.reads import counts_between
from tests.spec_example import spec_body

NOW = datetime(2026, 12, 4, tzinfo=UTC)
OCTOBER = parse_period("2026-10")


def new_client(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def put_agreement(pool: asyncpg.Pool, client: str) -> None:
    """SPEC §3's example agreement, in UTC so periods are UTC months."""
    async with pool.acquire() as conn:
        await store.store_agreement(conn, parse_agreement({**spec_body(client), "timezone": "UTC"}))


def items(
    client: str, period: str, n: int, *, first: int = 0, line: str = "customer_support"
) -> list[MeteredItem]:
    start, _ = period_bounds(parse_period(period), "UTC")
    complexity = "complex" if line == "accounting" else "basic"
    return [
        MeteredItem(
            client, f"{period}-{k}", start + timedelta(hours=k), line, complexity, 1, 60, "r", 1
        )
        for k in range(first, first + n)
    ]


async def meter(pool: asyncpg.Pool, batch: list[MeteredItem]) -> list[MeteredItem]:
    async with pool.acquire() as conn, conn.transaction():
        return await metering_store.count(conn, batch, timezone_of=lambda _: "UTC")


async def close(pool: asyncpg.Pool, client: str, period: str) -> CloseOutcome:
    async with pool.acquire() as conn:
        return await close_for_client(conn, client_id=client, period=parse_period(period), now=NOW)


async def late_items(pool: asyncpg.Pool, client: str, period: str) -> int:
    counts = await counts_between(pool, client, *period_bounds(parse_period(period), "UTC"))
    return sum(c.late_items for c in counts)


async def invoiced_items(pool: asyncpg.Pool, client: str, period: str) -> int:
    async with pool.acquire() as conn:
        return (await store.closed_periods_for_close(conn, client))[period].items


def adjustments(outcome: CloseOutcome) -> list[tuple[str, str]]:
    assert outcome.invoice is not None
    lines = outcome.invoice.model_dump(mode="json")["lines"]
    return [(a["period"], a["amount"]) for a in lines if a["kind"] == "late_adjustment"]


# --- close and store ----------------------------------------------------------------------------


async def test_a_second_close_issues_nothing_new(pool: asyncpg.Pool) -> None:
    client = new_client("reclose")
    await put_agreement(pool, client)
    await meter(pool, items(client, "2026-10", 20))
    first = await close(pool, client, "2026-10")
    again = await close(pool, client, "2026-10")
    assert first.newly_closed and first.invoice is not None
    assert not again.newly_closed and again.invoice == first.invoice
    assert len(await store.invoices(pool, client_id=client)) == 1
    assert await invoiced_items(pool, client, "2026-10") == 20


async def test_usage_without_an_agreement_stays_unbilled_when_one_comes(
    pool: asyncpg.Pool,
) -> None:
    client = new_client("unbilled")
    await meter(pool, items(client, "2026-10", 7))
    first = await close(pool, client, "2026-10")
    assert (first.invoice, first.unbilled_items, first.newly_closed) == (None, 7, True)
    await put_agreement(pool, client)
    again = await close(pool, client, "2026-10")
    assert (again.invoice, again.unbilled_items, again.newly_closed) == (None, 7, False)
    assert await store.unbilled(pool, "2026-10", client) == [Unbilled(client_id=client, items=7)]
    assert await store.invoices(pool, client_id=client) == []


async def test_a_close_behind_another_of_the_same_period_reads_it_closed_after_the_wait(
    pool: asyncpg.Pool,
) -> None:
    """Two closes of one client and period at once (an automatic and a manual one): the second
    waits for the first's lock, and its first reads, in the same round trip, are taken after
    the wait: it finds the period closed and answers with the same invoice, rather than
    closing it again."""
    client = new_client("twice")
    await put_agreement(pool, client)
    await meter(pool, items(client, "2026-10", 9))
    async with pool.acquire() as first:
        transaction = first.transaction()
        await transaction.start()
        try:
            ahead = await close_for_client(
                first, client_id=client, period=OCTOBER, now=NOW
            )  # its lock is held until the outer transaction ends
            behind = asyncio.create_task(close(pool, client, "2026-10"))
            await asyncio.sleep(0.5)
            assert not behind.done()  # waiting for the lock
        finally:
            await transaction.commit()
    second = await asyncio.wait_for(behind, timeout=30)
    assert ahead.newly_closed and ahead.invoice is not None
    assert not second.newly_closed and second.invoice == ahead.invoice
    assert len(await store.invoices(pool, client_id=client)) == 1


async def test_no_agreement_and_no_usage_closes_nothing(pool: asyncpg.Pool) -> None:
    client = new_client("nothing")
    outcome = await close(pool, client, "2026-10")
    assert outcome == CloseOutcome(client)
    async with pool.acquire() as conn:
        assert await store.closed_periods_for_close(conn, client) == {}


async def test_late_adjustments_only_for_the_periods_that_received_late_items(
    pool: asyncpg.Pool,
) -> None:
    client = new_client("late")
    await put_agreement(pool, client)
    for period in ("2026-07", "2026-08", "2026-09"):
        await meter(pool, items(client, period, 20))
        assert (await close(pool, client, period)).newly_closed
    # Late: 12 complex accounting items for August (scope: Enterprise); none for July or September.
    counted = await meter(pool, items(client, "2026-08", 12, first=100, line="accounting"))
    assert all(item.late for item in counted)

    october = await close(pool, client, "2026-10")
    assert adjustments(october) == [("2026-08", "80000.00")]  # 90000.00 − 10000.00 billed
    # Settled: a later close adjusts nothing, until more late items come.
    assert adjustments(await close(pool, client, "2026-11")) == []
    await meter(pool, items(client, "2026-09", 1, first=100))
    assert adjustments(await close(pool, client, "2026-12")) == [("2026-09", "0.00")]


# --- the close lock ---------------------------------------------------------------------------


class HeldClose:
    """A close of `client` held open after its reads, its lock taken, until `release()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, pool: asyncpg.Pool, client: str) -> None:
        self.reached = asyncio.Event()
        self._go = asyncio.Event()
        record = store.record_close

        async def held(conn: Any, decided: Close, issued_at: datetime) -> None:
            self.reached.set()
            await self._go.wait()
            await record(conn, decided, issued_at)

        monkeypatch.setattr(store, "record_close", held)  # the module closing.py calls
        self.task = asyncio.create_task(close(pool, client, "2026-10"))

    async def holding(self) -> None:
        """Returns once the close is held (its lock taken, its reads done)."""
        reached = asyncio.create_task(self.reached.wait())
        await asyncio.wait({self.task, reached}, return_when=asyncio.FIRST_COMPLETED)
        assert self.reached.is_set(), self.task.result()

    async def release(self) -> CloseOutcome:
        self._go.set()
        return await self.task


async def waits_for_a_lock(pool: asyncpg.Pool, pid: int, task: asyncio.Task[Any]) -> bool:
    """Whether the transaction on backend `pid` (the one `task` runs) waits for a lock, watched
    until it does or `task` is done."""
    while not task.done():
        waiting = await pool.fetchval(
            """SELECT count(*) FROM pg_locks
                WHERE pid = $1 AND NOT granted""",
            pid,
        )
        if waiting:
            return True
        await asyncio.sleep(0.01)
    return False


async def on_own_connection(
    pool: asyncpg.Pool, work: Callable[[Connection], Awaitable[Any]]
) -> tuple[int, asyncio.Task[Any]]:
    conn = await pool.acquire()
    pid: int = conn.get_server_pid()

    async def run() -> Any:
        try:
            return await work(conn)
        finally:
            await pool.release(conn)

    return pid, asyncio.create_task(run())


async def count_in_transaction(conn: Connection, batch: list[MeteredItem]) -> Any:
    async with conn.transaction():
        return await metering_store.count(conn, batch, timezone_of=lambda _: "UTC")


async def test_metering_another_client_goes_on_while_a_close_holds_its_lock_and_the_client_waits(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = new_client("held-a"), new_client("other-b")
    await put_agreement(pool, a)
    await meter(pool, items(a, "2026-10", 10))
    held = HeldClose(monkeypatch, pool, a)
    try:
        await held.holding()

        b_pid, b_write = await on_own_connection(
            pool, lambda conn: count_in_transaction(conn, items(b, "2026-10", 3))
        )
        assert not await waits_for_a_lock(pool, b_pid, b_write)
        assert len(await b_write) == 3  # committed while A's close is open

        a_pid, a_write = await on_own_connection(
            pool, lambda conn: count_in_transaction(conn, items(a, "2026-10", 1, first=50))
        )
        assert await waits_for_a_lock(pool, a_pid, a_write)
    finally:
        outcome = await held.release()
    assert outcome.newly_closed
    assert [item.late for item in await a_write] == [True]  # after the close: late, not invoiced
    assert await invoiced_items(pool, a, "2026-10") == 10
    assert await late_items(pool, a, "2026-10") == 1


async def test_a_close_waits_for_the_clients_write_in_flight_and_invoices_it(
    pool: asyncpg.Pool,
) -> None:
    client = new_client("inflight")
    await put_agreement(pool, client)
    await meter(pool, items(client, "2026-10", 10))
    conn = await pool.acquire()
    try:
        transaction = conn.transaction()
        await transaction.start()
        counted = await metering_store.count(
            conn, items(client, "2026-10", 1, first=50), timezone_of=lambda _: "UTC"
        )
        assert [item.late for item in counted] == [False]
        close_pid, closing_task = await on_own_connection(
            pool,
            lambda c: close_for_client(
                c, client_id=client, period=parse_period("2026-10"), now=NOW
            ),
        )
        assert await waits_for_a_lock(pool, close_pid, closing_task)
        await transaction.commit()
    finally:
        await pool.release(conn)
    assert (await closing_task).newly_closed
    assert await invoiced_items(pool, client, "2026-10") == 11
    assert await late_items(pool, client, "2026-10") == 0


@pytest.mark.parametrize("round_", range(12))
async def test_an_item_racing_the_close_is_in_the_invoice_or_late_never_neither(
    pool: asyncpg.Pool, round_: int
) -> None:
    client = new_client(f"race{round_}")
    await put_agreement(pool, client)
    await meter(pool, items(client, "2026-10", 10))
    racing = items(client, "2026-10", 5, first=100)
    writes = [meter(pool, [item]) for item in racing]
    # The close starts between the writes, at a different place each round.
    outcomes = await asyncio.gather(
        *writes[: round_ % 6], close(pool, client, "2026-10"), *writes[round_ % 6 :]
    )
    closed = outcomes[round_ % 6]
    assert isinstance(closed, CloseOutcome) and closed.newly_closed
    invoiced = await invoiced_items(pool, client, "2026-10")
    late = await late_items(pool, client, "2026-10")
    assert invoiced + late == 15
    assert invoiced >= 10
