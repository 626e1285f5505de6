"""PostgreSQL failover under load (issue 14): the services run against a primary and a
synchronous standby (Patroni, etcd: tools/localinfra/patroni.py) through a multi-host DSN, items
flow through the whole pipeline (intake HTTP → classifier → metering → PostgreSQL), and the
primary's postmaster is SIGKILLed while metering's batches are being written. After each
takeover the load goes on; at the end billing closes the period, and the counts and invoices
must equal the ground truth test_chaos.py computes: 0 items lost, 0 counted twice, every
accepted item on an invoice, to the cent.

Reduced size by default (CI: 2 failovers, back and forth). Full size, for the figures:

    TIERLINE_FAILOVER_ITEMS=200000 TIERLINE_FAILOVER_RATE=1500 TIERLINE_FAILOVER_KILLS=6 \\
        ./tierline test tests/e2e/test_failover.py -s -o timeout=3600
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.infra.db import retrying
from tests.e2e.conftest import Api
from tests.e2e.test_chaos import (
    SENDERS,
    Truth,
    close_and_compare,
    dead_lettered_items,
    put_chaos_agreements,
    sender,
)
from tests.e2e.test_pipeline import last_month
from tools.localinfra import LocalPatroniCluster
from tools.supervisor import Stack

ITEMS = int(os.environ.get("TIERLINE_FAILOVER_ITEMS", "8000"))
RATE = float(os.environ.get("TIERLINE_FAILOVER_RATE", "300"))  # items/s offered
FAILOVERS = int(os.environ.get("TIERLINE_FAILOVER_KILLS", "2"))

#: The longest metering may take to count again after a kill (a bound, not a performance check:
#: the figures are printed).
COUNTING_AGAIN_WITHIN = 120.0

#: What metering logs when a batch's transaction met the database gone (shared/infra/db.py).
RETRY_LINE = "meter batch: database unavailable, retrying"


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[LocalPatroniCluster]:
    data_dir = Path(tempfile.mkdtemp(prefix="tierline-failover-"))
    data_dir.chmod(0o755)  # PostgreSQL (and Patroni) run as nobody when we are root
    try:
        with LocalPatroniCluster(data_dir, fast=True) as cluster:
            yield cluster
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def database_url(postgres_cluster: LocalPatroniCluster) -> str:
    """This module's services reach the failover cluster (its multi-host DSN), not the session's
    single PostgreSQL."""
    return postgres_cluster.url


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    return {
        "env": {
            "INTAKE_PUBLISH_TIMEOUT_SECONDS": "3",
            "BILLING_CLOSE_BARRIER_TIMEOUT_SECONDS": "30",
            "BILLING_AUTO_CLOSE": "false",
        },
        "instances": {"metering": 2},
    }


@dataclass
class Failover:
    """One kill of the primary and what the pipeline did about it."""

    old: str
    new: str
    timeline: tuple[int | None, int | None]
    counted_before: int  # items in the ledger just before the kill
    counted_at_takeover: int  # ... once the standby had taken over (nothing acknowledged lost)
    counted_after: int  # ... once metering counted again
    takeover_seconds: float  # kill → the standby runs as the primary
    counting_seconds: float  # kill → metering's next commit
    rejoined_seconds: float  # kill → the old primary streams again as the synchronous standby
    retries_logged: int  # metering batches that met the dead primary and were retried

    def __str__(self) -> str:
        return (
            f"{self.old}→{self.new} timeline {self.timeline[0]}→{self.timeline[1]}: counted "
            f"{self.counted_before} before, {self.counted_at_takeover} at takeover, "
            f"{self.counted_after} after; takeover {self.takeover_seconds:.1f}s, counting again "
            f"{self.counting_seconds:.1f}s, rejoined {self.rejoined_seconds:.1f}s; "
            f"{self.retries_logged} batch retries logged"
        )


async def counted(url: str, clients: list[str]) -> int:
    """Items of `clients` in metering's ledger, read on whichever node is the primary now."""

    async def read() -> int:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            value: int = await conn.fetchval(
                "SELECT count(*) FROM metering.items WHERE client_id = ANY($1::text[])", clients
            )
            return value
        finally:
            await conn.close()

    return await retrying(read, what="count the test's items")


def metering_logs(stack: Stack) -> list[Path]:
    return [p.log_path for name, p in stack.processes.items() if name.startswith("metering")]


def retries_since(stack: Stack, offsets: dict[Path, int]) -> int:
    lines = 0
    for path in metering_logs(stack):
        with path.open("rb") as log:
            log.seek(offsets.get(path, 0))
            lines += log.read().decode(errors="replace").count(RETRY_LINE)
    return lines


async def fail_over(
    cluster: LocalPatroniCluster,
    stack: Stack,
    clients: list[str],
    progress: Callable[[], float],
    k: int,
) -> Failover:
    """Wait until `k + 1` of FAILOVERS + 1 shares of the load is sent and metering is writing,
    kill the primary, then wait for the takeover, metering's next commit and the old primary's
    return as the synchronous standby."""
    while True:
        if progress() >= (k + 1) / (FAILOVERS + 1):
            break
        await asyncio.sleep(0.1)
    while True:  # metering's batches in flight: the ledger grows from one look to the next
        before = await counted(cluster.url, clients)
        await asyncio.sleep(0.3)
        if await counted(cluster.url, clients) > before:
            break
    offsets = {path: path.stat().st_size for path in metering_logs(stack)}
    old = cluster.primary()
    timeline_before = next(m.timeline for m in cluster.members() if m.name == old.node_name)
    before = await counted(cluster.url, clients)
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill_primary)
    new = await asyncio.to_thread(cluster.wait_for_primary, other_than=old.node_name, timeout=120)
    takeover = time.monotonic() - killed_at
    at_takeover = await counted(cluster.url, clients)
    after = at_takeover
    while after <= at_takeover:
        assert time.monotonic() - killed_at < COUNTING_AGAIN_WITHIN, (
            f"metering counted nothing on {new.node_name} in {COUNTING_AGAIN_WITHIN:.0f}s"
        )
        await asyncio.sleep(0.1)
        after = await counted(cluster.url, clients)
    counting_again = time.monotonic() - killed_at
    members = await asyncio.to_thread(cluster.wait_healthy, 180)
    rejoined = time.monotonic() - killed_at
    timeline_after = next(m.timeline for m in members if m.name == new.node_name)
    return Failover(
        old=old.node_name,
        new=new.node_name,
        timeline=(timeline_before, timeline_after),
        counted_before=before,
        counted_at_takeover=at_takeover,
        counted_after=after,
        takeover_seconds=takeover,
        counting_seconds=counting_again,
        rejoined_seconds=rejoined,
        retries_logged=retries_since(stack, offsets),
    )


async def test_killing_the_primary_under_load_loses_and_doubles_nothing(
    api: Api, run_id: str, postgres_cluster: LocalPatroniCluster
) -> None:
    rng = random.Random(int(os.environ.get("TIERLINE_FAILOVER_SEED", "20261203")))
    period = last_month()
    clients, tz_of, agreements = await put_chaos_agreements(api, f"failover{{n}}-{run_id}")

    truth = Truth()
    share = ITEMS // SENDERS
    started = time.monotonic()
    senders = [
        asyncio.create_task(
            sender(
                api,
                truth,
                random.Random(rng.random()),
                range(k * share, (k + 1) * share),
                clients,
                period,
                tz_of,
                rate=RATE,
            )
        )
        for k in range(SENDERS)
    ]
    failovers: list[Failover] = []
    for k in range(FAILOVERS):
        failovers.append(
            await fail_over(
                postgres_cluster, api.stack, clients, lambda: len(truth.counted) / ITEMS, k
            )
        )
    await asyncio.gather(*senders)
    sent_seconds = time.monotonic() - started
    # Riding through is the point: no service died or had to be restarted.
    dead = [name for name, process in api.stack.processes.items() if not process.alive()]

    mismatches = await close_and_compare(api, truth, agreements, period)
    dead_valid = await dead_lettered_items(api, truth)
    in_ledger = await counted(postgres_cluster.url, clients)

    print(
        f"\nfailover: {len(truth.counted)} items ({truth.sent_copies} copies sent, "
        f"{truth.duplicates} re-sent duplicates) in {sent_seconds:.1f}s; {truth.requests} "
        f"requests, {truth.retries} retried {dict(truth.statuses)}; {len(failovers)} failovers:"
    )
    for failover in failovers:
        print(f"  {failover}")
    print(
        f"  in the ledger {in_ledger} of {len(truth.counted)} accepted (lost "
        f"{max(0, len(truth.counted) - in_ledger)}); usage and invoice mismatches "
        f"{len(mismatches)}; valid items dead-lettered {len(dead_valid)}; services died {dead}"
    )
    assert len(truth.counted) == share * SENDERS
    assert len(failovers) == FAILOVERS
    for failover in failovers:
        assert failover.new != failover.old, failover
        assert failover.timeline[1] is not None and failover.timeline[0] is not None
        assert failover.timeline[1] > failover.timeline[0], failover
        # Synchronous replication: every commit acknowledged before the kill is on the standby.
        assert failover.counted_at_takeover >= failover.counted_before, failover
        # The kill met metering mid-stream, and metering rode through it.
        assert failover.retries_logged >= 1, failover
        assert failover.counted_after > failover.counted_at_takeover, failover
    if FAILOVERS >= 2:  # back and forth: the old primary came back and took over again
        assert failovers[1].new == failovers[0].old
    assert not dead, f"services died: {dead}"
    assert in_ledger == len(truth.counted)
    assert not dead_valid
    assert not mismatches, "\n".join(mismatches)
