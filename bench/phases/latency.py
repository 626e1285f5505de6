"""Phase 2, latency at fixed offered rates: intake's receipt to counted, p50/p95/p99, the median
time in each stage, and metering's batches."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import asyncpg
import httpx
import orjson

from bench.common import CLIENTS, Results, say, tagged
from bench.load import wait_counted
from shared.contracts.topics import WORKITEMS_CLASSIFIED, WORKITEMS_COMPLETED
from shared.domain.periods import Period, period_bounds
from shared.infra.kafka_connection import KafkaConnection
from tools.supervisor import Stack
from tools.workload import stream_items


async def latency_phase(
    stack: Stack,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    rate: int,
    seconds: float,
    period: Period,
    results: Results,
) -> None:
    prefix = tagged(f"lat{rate}x")
    total = int(rate * seconds)
    bodies_items = max(1, rate // 20)  # one request every 50 ms
    start, end = period_bounds(period, "UTC")
    clients = [f"{prefix}{n}" for n in range(CLIENTS)]
    items = [
        {**item, "id": f"{prefix}{item['id']}"}
        for item in stream_items(clients, start, end, total, seed=rate, duplicate_ratio=0.10)
    ]
    unique = len({(i["client_id"], i["id"]) for i in items})
    bodies = [orjson.dumps(items[i : i + bodies_items]) for i in range(0, len(items), bodies_items)]
    url = f"{stack.url('intake')}/v1/work-items"
    headers = {"Authorization": f"Bearer {stack.intake_key}", "Content-Type": "application/json"}
    say(f"latency: {rate:,} items/s offered for {seconds:.0f}s")
    batches_before = await batch_figures(http, stack)
    started = time.monotonic()
    since_ms = int(time.time() * 1000)
    refused = 0

    async def post(body: bytes) -> None:
        nonlocal refused
        while True:
            try:
                if (await http.post(url, content=body, headers=headers)).status_code == 202:
                    return
            except httpx.TransportError:
                pass  # an overloaded intake may drop the connection: retry, as a client would
            refused += 1  # and 503 when Kafka cannot take it in time
            await asyncio.sleep(1)

    requests: list[asyncio.Task[None]] = []
    for n, body in enumerate(bodies):
        due = started + n * 0.05
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        requests.append(asyncio.create_task(post(body)))
    await asyncio.gather(*requests)
    sent_seconds = time.monotonic() - started
    await wait_counted(stack, pool, prefix, unique, timeout=600)
    batches = {
        name: after - batches_before[name]
        for name, after in (await batch_figures(http, stack)).items()
    }
    row = await pool.fetchrow(
        """SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                  (ORDER BY extract(epoch FROM metered_at - received_at)) AS p,
                  max(extract(epoch FROM metered_at - received_at)) AS worst
             FROM metering.items WHERE client_id LIKE $1""",
        f"{prefix}%",
    )
    assert row is not None
    p50, p95, p99 = (round(float(v) * 1000, 1) for v in row["p"])
    figures = {
        "offered_per_s": rate,
        "achieved_per_s": round(total / sent_seconds),
        "items": total,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": round(float(row["worst"]) * 1000, 1),
        "requests_retried": refused,
        **await stage_times(stack.kafka, pool, prefix, since_ms),
        "metering_batches": round(batches["count"]),
        "metering_mean_batch": round(batches["records"] / max(1, batches["count"])),
        "metering_mean_db_ms": round(1000 * batches["db_seconds"] / max(1, batches["count"]), 1),
    }
    results.latency.append(figures)
    say(f"latency: {figures}")


async def batch_figures(http: httpx.AsyncClient, stack: Stack) -> dict[str, float]:
    """Metering's batches so far, over its instances, from their /metrics: how many, their
    records and database time."""
    wanted = {
        "count": "tierline_metering_batch_size_count",
        "records": "tierline_metering_batch_size_sum",
        "db_seconds": "tierline_metering_db_seconds_sum",
    }
    figures = dict.fromkeys(wanted, 0.0)
    for name, process in stack.processes.items():
        if process.module != "metering":
            continue
        text = (await http.get(f"{stack.url(name)}/metrics")).text
        for line in text.splitlines():
            metric, _, value = line.partition(" ")
            for key, expected in wanted.items():
                if metric == expected:
                    figures[key] += float(value)
    return figures


async def stage_times(
    kafka: KafkaConnection, pool: asyncpg.Pool, prefix: str, since_ms: int
) -> dict[str, dict[str, float]]:
    """The median and p99 time in each stage (`median_stage_ms`, `p99_stage_ms`), from Kafka's
    record timestamps (set when each stage sent): intake (receipt → in workitems.completed),
    classifier (→ in workitems.classified) and metering (→ committed in PostgreSQL)."""
    from aiokafka import TopicPartition

    from shared.infra.kafka import partitions_of

    stamps: dict[str, dict[tuple[str, str], float]] = {}
    received: dict[tuple[str, str], float] = {}
    for topic in (WORKITEMS_COMPLETED, WORKITEMS_CLASSIFIED):
        consumer = kafka.consumer(enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await partitions_of(kafka, topic)]
            consumer.assign(tps)
            starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found else ends[tp])
            seen = stamps.setdefault(topic, {})
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        document = orjson.loads(record.value)
                        batch = document if isinstance(document, list) else [document]
                        for item in batch:
                            if not item["client_id"].startswith(prefix):
                                continue
                            key = (item["client_id"], item["id"])
                            seen.setdefault(key, record.timestamp / 1000)
                            received.setdefault(
                                key, datetime.fromisoformat(item["received_at"]).timestamp()
                            )
        finally:
            await consumer.stop()
    rows = await pool.fetch(
        "SELECT client_id, item_id, extract(epoch FROM metered_at) AS at FROM metering.items "
        "WHERE client_id LIKE $1",
        f"{prefix}%",
    )
    metered = {(r["client_id"], r["item_id"]): float(r["at"]) for r in rows}
    completed, classified = stamps[WORKITEMS_COMPLETED], stamps[WORKITEMS_CLASSIFIED]
    keys = [k for k in metered if k in completed and k in classified and k in received]

    stages = {
        "intake": sorted(completed[k] - received[k] for k in keys),
        "classifier": sorted(classified[k] - completed[k] for k in keys),
        "metering": sorted(metered[k] - classified[k] for k in keys),
    }

    def at(quantile: float) -> dict[str, float]:
        return {
            stage: round(1000 * times[int(len(times) * quantile)], 1) if times else 0.0
            for stage, times in stages.items()
        }

    return {"median_stage_ms": at(0.5), "p99_stage_ms": at(0.99)}
