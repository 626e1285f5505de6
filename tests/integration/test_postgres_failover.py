"""PostgreSQL with failover (tools/localinfra/patroni.py) as the services use it: a pool on the
multi-host DSN follows the primary through a failover, a commit waits for the synchronous
standby, and a batch whose commit was cut off before it was acknowledged counts once when it is
run again on the new primary (metering's dedupe by (client_id, item_id)).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.metering import store
from shared.infra.db import apply_schema, create_pool, is_transient, retrying
from tests.integration.test_metering_store import make, meter_batch, totals, utc
from tools.localinfra import LocalPatroniCluster

#: Bounds on waits that only end if failing over works (never timed assertions).
FAILOVER_WITHIN = 120.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalPatroniCluster]:
    data_dir = Path(tempfile.mkdtemp(prefix="tierline-patroni-"))
    data_dir.chmod(0o755)  # PostgreSQL (and Patroni) run as nobody when we are root
    try:
        with LocalPatroniCluster(data_dir, fast=True) as started:
            yield started
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def ha_pool(cluster: LocalPatroniCluster) -> AsyncIterator[asyncpg.Pool]:
    """A pool as the services make one, on the cluster's multi-host DSN, once both nodes are up."""
    await asyncio.to_thread(cluster.wait_healthy, FAILOVER_WITHIN)
    pool = await create_pool(cluster.url, size=4)
    await apply_schema(pool)
    try:
        yield pool
    finally:
        await pool.close()


async def served_by(pool: asyncpg.Pool) -> tuple[int, bool]:
    """(port, in recovery) of the node a pooled connection reaches."""
    row = await pool.fetchrow("SELECT inet_server_port() AS port, pg_is_in_recovery() AS standby")
    assert row is not None
    return int(row["port"]), bool(row["standby"])


async def test_the_pool_follows_the_primary_through_a_failover(
    cluster: LocalPatroniCluster, ha_pool: asyncpg.Pool
) -> None:
    client = f"follow-{uuid.uuid4().hex[:6]}"
    old = cluster.primary()
    assert await served_by(ha_pool) == (old.started_port(), False)
    await meter_batch(ha_pool, [make(client, n) for n in range(100)], timezone_of=utc)

    await asyncio.to_thread(cluster.kill_primary)
    new = await asyncio.to_thread(
        cluster.wait_for_primary, other_than=old.node_name, timeout=FAILOVER_WITHIN
    )
    # The same pool, its connections to the old primary gone: it finds the new one.
    async with asyncio.timeout(FAILOVER_WITHIN):
        counted = await retrying(
            lambda: meter_batch(
                ha_pool, [make(client, n) for n in range(100, 200)], timezone_of=utc
            ),
            what="meter after the failover",
            pool=ha_pool,
        )
    assert len(counted) == 100
    assert await served_by(ha_pool) == (new.started_port(), False)
    # Synchronous replication: the batch acknowledged before the kill is on the new primary.
    assert await totals(ha_pool, client) == (200, 200, 0)


async def test_a_commit_waits_for_the_standby_and_one_cut_off_counts_once(
    cluster: LocalPatroniCluster, ha_pool: asyncpg.Pool
) -> None:
    client = f"indoubt-{uuid.uuid4().hex[:6]}"
    batch = [make(client, n, units=2) for n in range(300)]
    old = cluster.primary()
    [standby] = [node for node in cluster.nodes if node is not old]
    receiver = await standby_wal_receiver(standby.url)

    conn = await asyncpg.connect(cluster.url)
    os.kill(receiver, signal.SIGSTOP)  # the standby stops taking WAL: commits cannot return
    try:
        transaction = conn.transaction()
        await transaction.start()
        assert len(await store.count(conn, batch, timezone_of=utc)) == 300
        commit = asyncio.create_task(transaction.commit())
        await asyncio.sleep(1.0)
        # Written on the primary, not yet flushed on the standby: no acknowledgement.
        assert not commit.done()
        await asyncio.to_thread(cluster.kill_primary)
        # The primary dies with the commit unacknowledged: the client cannot know its fate.
        with pytest.raises(Exception) as cut_off:
            async with asyncio.timeout(FAILOVER_WITHIN):
                await commit
    finally:
        os.kill(receiver, signal.SIGCONT)
    assert is_transient(cut_off.value), repr(cut_off.value)  # retried, never dead-lettered
    with contextlib.suppress(Exception):
        await conn.close(timeout=2)

    # Whatever became of that commit, metering runs the batch again on the new primary.
    await asyncio.to_thread(
        cluster.wait_for_primary, other_than=old.node_name, timeout=FAILOVER_WITHIN
    )
    async with asyncio.timeout(FAILOVER_WITHIN):
        await retrying(
            lambda: meter_batch(ha_pool, batch, timezone_of=utc), what="retry", pool=ha_pool
        )
        await retrying(
            lambda: meter_batch(ha_pool, batch, timezone_of=utc), what="redelivery", pool=ha_pool
        )
    assert await totals(ha_pool, client) == (300, 600, 0)
    # The old primary comes back as the standby (its own copy of the commit rewound away), and
    # the counts are still once.
    await asyncio.to_thread(cluster.wait_healthy, FAILOVER_WITHIN)
    assert await totals(ha_pool, client) == (300, 600, 0)


async def standby_wal_receiver(url: str) -> int:
    """The pid of the standby's WAL receiver (the process that takes the primary's WAL)."""
    conn = await asyncpg.connect(url)
    try:
        pid = await conn.fetchval("SELECT pid FROM pg_stat_wal_receiver")
    finally:
        await conn.close()
    assert pid is not None, "the standby has no WAL receiver"
    return int(pid)
