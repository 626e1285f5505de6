"""Tierline's benchmark: the real stack on this machine, driven over HTTP, measured end to end.

    ./tierline bench                # the full run (≥ 1,000,000 items), writes bench/RESULTS.md
    ./tierline bench --items 50000 --rates 1000 --rate-seconds 5 --skip-ceiling --out /tmp/r.md

The stack runs as deployed for volume: one process per service, except metering, which runs as
two instances of one consumer group (three partitions each), so one instance's transaction is in
PostgreSQL while the other decodes its next batch (`--instances` changes it).

Phases, each printing its figures as it goes:
1. throughput — intake over HTTP at full speed (concurrent clients, 1,000-item requests, 10 %
   re-sent duplicates), from the first request to the moment PostgreSQL holds every unique item;
2. latency at fixed offered rates — intake's receipt to counted (`metering.items.received_at` to
   `metered_at`), p50/p95/p99, with metering's batch sizes and database time;
3. closing the period that holds the throughput phase's items (and only those: the other phases
   use the month before);
4. CPU seconds and peak resident memory of each service, Kafka and PostgreSQL;
5. the ceiling on the same broker: Kafka's ProducerPerformance / ConsumerPerformance at the same
   message size, and a bare aiokafka consume→produce loop; Tierline as a ratio of each;
6. a py-spy profile of the busiest service during a full-speed burst.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from services.billing.barrier import wait_until_metered
from shared.contracts.topics import (
    CLASSIFIER_GROUP,
    METERING_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
)
from shared.domain.periods import Period, period_bounds, period_of
from shared.infra.kafka import committed_offsets, end_offsets
from tools.supervisor import REPO_ROOT, SERVICES, Stack, _free_port
from tools.workload import stream_items

CLIENTS = 50
#: Set per run so that runs against one database never count each other's items.
RUN_TAG = {"tag": ""}


def tagged(name: str) -> str:
    return f"{name}{RUN_TAG['tag']}-"


#: Not Tierline's services: the figures of the broker and the database are reported apart.
INFRASTRUCTURE = frozenset({"kafka", "postgres"})
REQUEST_ITEMS = 1000
CONCURRENCY = 6


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    throughput: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    close: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    #: Headline figures of earlier complete runs written to the same file, newest last.
    history: list[dict[str, Any]] = field(default_factory=list)


# --- the workload ----------------------------------------------------------------------------


def agreement(client: str) -> dict[str, Any]:
    return {
        "client_id": client,
        "currency": "USD",
        "timezone": "UTC",
        "effective_from": "2026-01-01",
        "pricing": {
            "weights": {"basic": 1, "standard": 2, "complex": 5},
            "unit_basis": {"data_entry": "units"},
            "tiers": [
                {
                    "name": "Essential",
                    "up_to": 20000,
                    "fee": "10000.00",
                    "scope": {"customer_support": "all", "data_entry": "all"},
                },
                {"name": "Professional", "up_to": 100000, "fee": "35000.00"},
                {"name": "Enterprise", "up_to": 500000, "fee": "90000.00"},
            ],
            "overage_rate": "0.50",
            "scope_policy": {"mode": "upgrade", "min_items": 50, "out_of_scope_rate": "1.00"},
        },
    }


def request_bodies(
    prefix: str, count: int, period: Period, *, seed: int
) -> tuple[list[bytes], int]:
    """Pre-serialized request bodies (so the load generator spends nothing per item)."""
    start, end = period_bounds(period, "UTC")
    clients = [f"{prefix}{n}" for n in range(CLIENTS)]
    bodies, batch, unique = [], [], set()
    for generated in stream_items(clients, start, end, count, seed=seed, duplicate_ratio=0.10):
        item = {**generated, "id": f"{prefix}{generated['id']}"}  # a re-sent copy is one object
        unique.add((item["client_id"], item["id"]))
        batch.append(item)
        if len(batch) == REQUEST_ITEMS:
            bodies.append(orjson.dumps(batch))
            batch = []
    if batch:
        bodies.append(orjson.dumps(batch))
    return bodies, len(unique)


# --- driving intake --------------------------------------------------------------------------


async def post_all(http: httpx.AsyncClient, url: str, key: str, bodies: list[bytes]) -> int:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                response = await http.post(url, content=body, headers=headers)
                if response.status_code == 202:
                    accepted += response.json()["accepted"]
                    break
                await asyncio.sleep(0.2)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return accepted


async def counted(pool: asyncpg.Pool, prefix: str) -> int:
    value = await pool.fetchval(
        "SELECT count(*) FROM metering.items WHERE client_id LIKE $1", f"{prefix}%"
    )
    return int(value)


async def wait_counted(
    stack: Stack, pool: asyncpg.Pool, prefix: str, unique: int, timeout: float
) -> float:
    """When every accepted item is counted, found by asking Kafka, not the database: once both
    consumer groups have committed past the topics' end offsets (the close's completeness
    barrier) every item accepted so far is in PostgreSQL. Polling `count(*)` instead would put
    a scan of the whole ledger on the machine being measured. One exact count confirms it."""
    await wait_until_metered(stack.kafka_bootstrap, timeout=timeout)
    done = time.monotonic()
    found = await counted(pool, prefix)
    if found < unique:
        raise AssertionError(f"only {found} of {unique} counted")
    return done


async def throughput_phase(
    stack: Stack,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    items: int,
    period: Period,
    results: Results,
    infra: Any,
) -> None:
    say(f"throughput: generating {items:,} items ({CLIENTS} clients, 10 % duplicates)")
    bodies, unique = request_bodies(tagged("tp"), items, period, seed=1)
    say(
        f"throughput: posting {len(bodies)} requests of {REQUEST_ITEMS} items, "
        f"{CONCURRENCY} concurrent"
    )
    url = f"{stack.url('intake')}/v1/work-items"
    cpu_before = cpu_seconds(stack, infra)
    started = time.monotonic()
    progress = asyncio.create_task(report_progress(stack, started))
    accepted = await post_all(http, url, stack.intake_key, bodies)
    accepted_at = time.monotonic()
    done_at = await wait_counted(stack, pool, tagged("tp"), unique, timeout=3600)
    progress.cancel()
    cpu_after = cpu_seconds(stack, infra)
    elapsed = done_at - started
    results.throughput = {
        "items_accepted": accepted,
        "unique_items": unique,
        "intake_seconds": round(accepted_at - started, 2),
        "end_to_end_seconds": round(elapsed, 2),
        "intake_items_per_s": round(accepted / (accepted_at - started)),
        "end_to_end_items_per_s": round(accepted / elapsed),
        "end_to_end_unique_per_s": round(unique / elapsed),
        # CPU each process spent per accepted item during this phase ("bench" is the load
        # generator itself, on the same two cores).
        "cpu_us_per_item": {
            name: round((cpu_after[name] - cpu_before.get(name, 0.0)) / accepted * 1e6)
            for name in cpu_after
        },
    }
    say(f"throughput: {results.throughput}")


async def report_progress(stack: Stack, started: float) -> None:
    """How far behind intake the classifier and metering are (consumer lag, from Kafka)."""
    while True:
        await asyncio.sleep(10)
        lags = []
        for group, topic in (
            (CLASSIFIER_GROUP, WORKITEMS_COMPLETED),
            (METERING_GROUP, WORKITEMS_CLASSIFIED),
        ):
            ends = await end_offsets(stack.kafka_bootstrap, [topic])
            committed = await committed_offsets(stack.kafka_bootstrap, group)
            lags.append(sum(end - committed.get(tp, 0) for tp, end in ends.items()))
        say(
            f"  … {time.monotonic() - started:.0f}s: lag classifier {lags[0]:,}, "
            f"metering {lags[1]:,}"
        )


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
        "median_stage_ms": await stage_medians(stack.kafka_bootstrap, pool, prefix, since_ms),
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


async def stage_medians(
    bootstrap: str, pool: asyncpg.Pool, prefix: str, since_ms: int
) -> dict[str, float]:
    """Median time in each stage, from Kafka's record timestamps (set when each stage sent):
    intake (receipt → in workitems.completed), classifier (→ in workitems.classified) and
    metering (→ committed in PostgreSQL)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from shared.infra.kafka import partitions_of

    stamps: dict[str, dict[tuple[str, str], float]] = {}
    received: dict[tuple[str, str], float] = {}
    for topic in (WORKITEMS_COMPLETED, WORKITEMS_CLASSIFIED):
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
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
                        item = orjson.loads(record.value)
                        if item["client_id"].startswith(prefix):
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

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return round(1000 * ordered[len(ordered) // 2], 1) if ordered else 0.0

    return {
        "intake": median([completed[k] - received[k] for k in keys]),
        "classifier": median([classified[k] - completed[k] for k in keys]),
        "metering": median([metered[k] - classified[k] for k in keys]),
    }


async def close_phase(
    stack: Stack, http: httpx.AsyncClient, period: Period, results: Results, items: int
) -> None:
    say(f"close: closing {period.key} ({items:,} items over {CLIENTS} clients)")
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    started = time.monotonic()
    response = await http.post(
        f"{stack.url('billing')}/v1/periods/{period.key}/close", headers=headers, timeout=600
    )
    elapsed = time.monotonic() - started
    response.raise_for_status()
    invoices = response.json()["invoices"]
    results.close = {
        "period": period.key,
        "items": items,
        "invoices": len(invoices),
        "seconds": round(elapsed, 3),
    }
    say(f"close: {results.close}")


# --- resources --------------------------------------------------------------------------------


def process_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a process."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def descendants(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
                    found += descendants(int(entry.name))
    return found


def cpu_seconds(stack: Stack, infra: Any) -> dict[str, float]:
    figures = {name: f["cpu_seconds"] for name, f in resources(stack, infra).items()}
    own = os.times()
    figures["bench"] = own.user + own.system
    return figures


def resources(stack: Stack, infra: Any) -> dict[str, dict[str, float]]:
    figures = {}
    for name, process in stack.processes.items():
        if process.pid is not None:
            cpu, peak = process_figures(process.pid)
            figures[name] = {"cpu_seconds": round(cpu, 1), "peak_rss_mib": round(peak, 1)}
    if infra is not None:
        for name, server in (("kafka", infra.kafka), ("postgres", infra.postgres)):
            if server.pid is None:
                continue
            pids = [server.pid, *descendants(server.pid)]
            cpu = sum(process_figures(p)[0] for p in pids if Path(f"/proc/{p}").exists())
            peak = max(process_figures(p)[1] for p in pids if Path(f"/proc/{p}").exists())
            figures[name] = {"cpu_seconds": round(cpu, 1), "peak_rss_mib": round(peak, 1)}
    return figures


# --- the ceiling ------------------------------------------------------------------------------


def kafka_tool(tool: str, args: list[str]) -> str:
    from tools.localinfra import kafka_jars_dir

    lib = kafka_jars_dir()
    command = ["java", "-Xmx512m", "-cp", f"{lib}/*", f"org.apache.kafka.tools.{tool}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=True).stdout


def ceiling_phase(bootstrap: str, message_bytes: int, records: int, results: Results) -> None:
    topic = f"bench-ceiling-{int(time.time())}"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
async def main():
    a = AIOKafkaAdminClient(bootstrap_servers="{bootstrap}"); await a.start()
    await a.create_topics([NewTopic("{topic}", 6, 1), NewTopic("{topic}-out", 6, 1)])
    await a.close()
asyncio.run(main())
""",
        ],
        check=True,
        timeout=120,
    )
    say(f"ceiling: ProducerPerformance, {records:,} records of {message_bytes} bytes, acks=all")
    out = kafka_tool(
        "ProducerPerformance",
        [
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            str(message_bytes),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
            "linger.ms=5",
            "batch.size=262144",
        ],
    )
    match = re.findall(r"([\d.]+) records/sec", out)
    produced = float(match[-1]) if match else 0.0
    say("ceiling: ConsumerPerformance")
    out = kafka_tool(
        "ConsumerPerformance",
        [
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--messages",
            str(records),
            "--timeout",
            "60000",
        ],
    )
    # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, …
    rows = [line for line in out.splitlines() if line and line[0].isdigit()]
    consumed = float(rows[-1].split(",")[5]) if rows else 0.0
    say("ceiling: bare aiokafka consume → produce loop")
    loop = bare_loop(bootstrap, topic, f"{topic}-out", min(records, 300_000))
    results.ceiling = {
        "message_bytes": message_bytes,
        "kafka_producer_perf_per_s": round(produced),
        "kafka_consumer_perf_per_s": round(consumed),
        "aiokafka_consume_produce_per_s": round(loop),
    }
    say(f"ceiling: {results.ceiling}")


def bare_loop(bootstrap: str, source: str, target: str, records: int) -> float:
    script = f"""
import asyncio, time
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
async def main():
    consumer = AIOKafkaConsumer("{source}", bootstrap_servers="{bootstrap}",
        auto_offset_reset="earliest", group_id="bench-bare", enable_auto_commit=False,
        max_partition_fetch_bytes=4*1024*1024)
    producer = AIOKafkaProducer(bootstrap_servers="{bootstrap}", acks="all",
        enable_idempotence=True, linger_ms=5, max_batch_size=262144)
    await consumer.start(); await producer.start()
    done, started = 0, None
    while done < {records}:
        batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
        if started is None and batches: started = time.monotonic()
        futures = [await producer.send("{target}", r.value, key=r.key)
                   for rs in batches.values() for r in rs]
        await asyncio.gather(*futures)
        await consumer.commit()
        done += len(futures)
    print(done / (time.monotonic() - started))
    await consumer.stop(); await producer.stop()
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


# --- profile ----------------------------------------------------------------------------------


def profile(pid: int, seconds: int) -> dict[str, list[tuple[str, float]]]:
    """Where a running service spends its CPU, sampled with py-spy: the frames most often on
    the stack (inclusive) and the leaf functions themselves (self), as % of samples."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        try:
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "-p",
                    str(pid),
                    "-d",
                    str(seconds),
                    "-f",
                    "raw",
                    "-o",
                    out.name,
                    "-r",
                    "50",
                    "--nonblocking",
                ],
                capture_output=True,
                timeout=seconds + 60,
                check=False,
            )
        except OSError as error:  # py-spy missing or not permitted
            say(f"profile: skipped ({error})")
            return {"inclusive": [], "self": []}
        text = Path(out.name).read_text()
    inclusive: dict[str, float] = {}
    leaf: dict[str, float] = {}
    samples = 0.0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = float(count)
        samples += n
        frames = [_short(frame) for frame in stack.split(";")]
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0.0) + n
        leaf[frames[-1]] = leaf.get(frames[-1], 0.0) + n
    if not samples:
        return {"inclusive": [], "self": []}

    def top(table: dict[str, float], count: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])
        return [(name, round(100 * n / samples, 1)) for name, n in ranked[:count]]

    ours = {k: v for k, v in inclusive.items() if "services/" in k or "shared/" in k}
    return {"inclusive": top(ours, 15), "self": top(leaf, 20)}


def _short(frame: str) -> str:
    return re.sub(r" \(.*?/(site-packages|lib/python3\.11|main)/", " (", frame)


def slowest_stage(results: Results) -> str | None:
    """The service whose stage took longest at the highest fixed rate that was measured."""
    if not results.latency:
        return None
    stages: dict[str, float] = results.latency[-1]["median_stage_ms"]
    return max(stages, key=lambda stage: stages[stage]) if stages else None


async def profile_phase(
    stack: Stack,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    period: Period,
    results: Results,
    items: int,
    service: str | None = None,
) -> None:
    bodies, unique = request_bodies(tagged("prof"), items, period, seed=3)
    url = f"{stack.url('intake')}/v1/work-items"
    before = {n: process_figures(p.pid)[0] for n, p in stack.processes.items() if p.pid}
    posting = asyncio.create_task(post_all(http, url, stack.intake_key, bodies))
    await asyncio.sleep(3)
    mid = {n: process_figures(p.pid)[0] for n, p in stack.processes.items() if p.pid}
    busiest = service or slowest_stage(results) or max(mid, key=lambda n: mid[n] - before[n])
    say(f"profile: sampling {busiest} with py-spy for 15s, the burst at full speed")
    frames = await asyncio.to_thread(profile, stack.processes[busiest].pid or 0, 15)
    await posting
    await wait_counted(stack, pool, tagged("prof"), unique, timeout=1200)
    results.profile = {"service": busiest, "frames": frames}


# --- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        int(line.split()[1]) // 1024 // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def render(results: Results) -> str:
    t, c = results.throughput, results.ceiling
    lines = [
        "# Tierline benchmark results",
        "",
        f"Machine: {results.machine['cpus']} cores ({results.machine['cpu_model']}), "
        f"{results.machine['memory_gib']} GiB, Python {results.machine['python']}; Kafka 4.1.1 "
        "(single node, KRaft) and PostgreSQL 15 on the same machine; one process per service"
        + "".join(
            f", {name} × {count}" for name, count in results.machine.get("instances", {}).items()
        )
        + f". Run on {results.machine['date']}.",
        "",
        f"Command: `{results.command}`",
        "",
        *targets(results),
        "",
        "## End-to-end throughput (intake over HTTP → counted in PostgreSQL)",
        "",
        "| items accepted | unique | intake | end to end | items/s accepted → counted | unique/s |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {t.get('items_accepted', 0):,} | {t.get('unique_items', 0):,} | "
        f"{t.get('intake_seconds')} s ({t.get('intake_items_per_s', 0):,}/s) | "
        f"{t.get('end_to_end_seconds')} s | **{t.get('end_to_end_items_per_s', 0):,}** | "
        f"{t.get('end_to_end_unique_per_s', 0):,} |",
        "",
        "CPU per accepted item during that phase (µs): "
        + ", ".join(f"{n} {v}" for n, v in t.get("cpu_us_per_item", {}).items())
        + ".",
        "",
        "## Latency, intake receipt → counted",
        "",
        "| offered/s | achieved/s | items | p50 ms | p95 ms | p99 ms | max ms "
        "| median ms in intake / classifier / metering | metering batches: count, mean items, "
        "mean ms in the database | requests retried (503 or dropped) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['offered_per_s']:,} | {r['achieved_per_s']:,} | {r['items']:,} | {r['p50_ms']} "
        f"| {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} "
        f"| {' / '.join(str(v) for v in r.get('median_stage_ms', {}).values())} "
        f"| {r.get('metering_batches', '–')}, {r.get('metering_mean_batch', '–')}, "
        f"{r.get('metering_mean_db_ms', '–')} "
        f"| {r.get('requests_retried', 0)} |"
        for r in results.latency
    ]
    if results.history:
        lines += [
            "",
            "## Run to run (this file's recent complete runs, newest last)",
            "",
            "Two cores shared with Kafka and PostgreSQL on a virtual machine: the figures move "
            "from run to run, so read one run beside the others.",
            "",
            "| when (UTC) | commit | metering instances | items | items/s end to end "
            "| p99 ms at 5,000/s | close s (items) | largest service RSS MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {h['at']} | {h['commit']} | {h['metering_instances']} | {h['items'] or 0:,} "
            f"| {h['items_per_s'] or 0:,} | {h['p99_ms_at_5000']} "
            f"| {h['close_seconds']} ({h['close_items'] or 0:,}) | {h['peak_service_rss_mib']} |"
            for h in results.history
        ]
    if results.close:
        lines += [
            "",
            "## Closing a period",
            "",
            f"Closing {results.close['period']} with {results.close['items']:,} items "
            f"({results.close['invoices']} invoices): **{results.close['seconds']} s**.",
        ]
    lines += [
        "",
        "## CPU and memory (whole run)",
        "",
        "| process | CPU seconds | peak RSS MiB |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {n} | {f['cpu_seconds']} | {f['peak_rss_mib']} |" for n, f in results.resources.items()
    ]
    if c:
        e2e = t.get("end_to_end_items_per_s", 0)
        lines += [
            "",
            f"## The ceiling on the same broker ({c['message_bytes']}-byte messages)",
            "",
            "| tool | messages/s | Tierline end to end as a share |",
            "| --- | --- | --- |",
            f"| Kafka ProducerPerformance (acks=all) | {c['kafka_producer_perf_per_s']:,} | "
            f"{share(e2e, c['kafka_producer_perf_per_s'])} |",
            f"| Kafka ConsumerPerformance | {c['kafka_consumer_perf_per_s']:,} | "
            f"{share(e2e, c['kafka_consumer_perf_per_s'])} |",
            f"| bare aiokafka consume → produce | {c['aiokafka_consume_produce_per_s']:,} | "
            f"{share(e2e, c['aiokafka_consume_produce_per_s'])} |",
        ]
    if results.profile:
        frames = results.profile["frames"]
        lines += [
            "",
            f"## Where the time goes: {results.profile['service']}",
            "",
            "py-spy, 15 s at full speed, % of CPU samples. Our code, inclusive:",
            "",
            "| % | frame |",
            "| --- | --- |",
        ]
        lines += [f"| {pct} | `{name}` |" for name, pct in frames["inclusive"]]
        lines += ["", "Leaf functions (self time):", "", "| % | frame |", "| --- | --- |"]
        lines += [f"| {pct} | `{name}` |" for name, pct in frames["self"]]
    return "\n".join(lines) + "\n"


def targets(results: Results) -> list[str]:
    """Issue 5's targets against this run's figures, with the distance where one is missed."""
    rows = []
    e2e = results.throughput.get("end_to_end_items_per_s")
    if e2e:
        rows.append(
            (
                "≥ 10,000 items/s end to end, sustained",
                f"{e2e:,}/s",
                "met" if e2e >= 10_000 else f"missed by {1 - e2e / 10_000:.0%}",
            )
        )
    at_5000 = next((r for r in results.latency if r["offered_per_s"] == 5000), None)
    if at_5000:
        p99 = at_5000["p99_ms"]
        rows.append(
            (
                "p99 ≤ 500 ms at 5,000 items/s",
                f"{p99} ms",
                "met" if p99 <= 500 else f"missed: {p99 / 500:.1f}× the target",
            )
        )
    if results.close:
        seconds = results.close["seconds"]
        rows.append(
            (
                f"close a {results.close['items']:,}-item period in ≤ 5 s",
                f"{seconds} s",
                "met" if seconds <= 5 else f"missed by {seconds - 5:.1f} s",
            )
        )
    services = {n: f for n, f in results.resources.items() if n not in INFRASTRUCTURE}
    if services:
        worst = max(services, key=lambda n: services[n]["peak_rss_mib"])
        peak = services[worst]["peak_rss_mib"]
        rows.append(
            (
                "no service above 300 MiB resident",
                f"{worst} {peak} MiB",
                "met" if peak <= 300 else "missed",
            )
        )
    if not rows:
        return []
    return [
        "",
        "## Targets",
        "",
        "| target | this run | |",
        "| --- | --- | --- |",
        *(f"| {t} | {v} | {verdict} |" for t, v, verdict in rows),
    ]


def share(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.1%}" if theirs else "n/a"


# --- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def infrastructure(data_dir: Path) -> Iterator[tuple[str, str, Any]]:
    kafka, database = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("DATABASE_URL")
    if kafka and database:
        yield kafka, database, None
        return
    from tools.localinfra import LocalInfra

    with LocalInfra(data_dir) as infra:
        yield infra.kafka_bootstrap, infra.database_url, infra


def save(results: Results, out: str) -> None:
    """Write what is known so far: a failure late in the run keeps the earlier figures."""
    Path(out).with_suffix(".json").write_text(json.dumps(results.__dict__, indent=2))
    Path(out).write_text(render(results))


async def run(args: argparse.Namespace, results: Results, data_dir: Path) -> None:
    say(f"starting Kafka and PostgreSQL under {data_dir}")
    with infrastructure(data_dir) as (kafka, database, infra):
        ports = {name: _free_port() for name in SERVICES}
        stack = Stack(
            kafka,
            database,
            data_dir / "logs",
            ports=ports,
            instances=args.instances,
            extra_env={
                "BILLING_AUTO_CLOSE": "false",
                "LOG_LEVEL": "WARNING",
                "BILLING_CLOSE_BARRIER_TIMEOUT_SECONDS": "600",
            },
        )
        with stack:
            say("services up")
            pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
            assert pool is not None
            # The throughput phase fills `period`, which is then closed; the other phases'
            # items go to the month before, so the closed period holds the 1M-item run alone.
            period = period_of(datetime.now(UTC), "UTC").previous()
            other = period.previous()
            async with httpx.AsyncClient(
                timeout=120, limits=httpx.Limits(max_connections=64)
            ) as http:
                admin = {"Authorization": f"Bearer {stack.admin_key}"}
                for prefix in (
                    tagged("tp"),
                    tagged("prof"),
                    *(tagged(f"lat{r}x") for r in args.rates),
                ):
                    for n in range(CLIENTS):
                        client = f"{prefix}{n}"
                        response = await http.put(
                            f"{stack.url('billing')}/v1/agreements/{client}",
                            json=agreement(client),
                            headers=admin,
                        )
                        response.raise_for_status()
                await throughput_phase(stack, pool, http, args.items, period, results, infra)
                save(results, args.out)
                for rate in args.rates:
                    await latency_phase(stack, pool, http, rate, args.rate_seconds, other, results)
                    save(results, args.out)
                if args.profile_items:
                    try:
                        await profile_phase(
                            stack,
                            pool,
                            http,
                            other,
                            results,
                            args.profile_items,
                            args.profile_service,
                        )
                    except (OSError, subprocess.SubprocessError) as error:
                        say(f"profile: skipped ({error})")
                await close_phase(stack, http, period, results, results.throughput["unique_items"])
                save(results, args.out)
            await pool.close()
            results.resources = resources(stack, infra)
            say(f"resources: {json.dumps(results.resources)}")
            save(results, args.out)
        if not args.skip_ceiling:
            message_bytes = 350
            ceiling_phase(kafka, message_bytes, args.ceiling_records, results)
    shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tierline bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--items",
        type=int,
        default=1_112_000,
        help="items of the throughput run; with 10 %% re-sent, the default puts just over "
        "1,000,000 unique items in the period that is then closed",
    )
    parser.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",") if x], default=[1000, 5000, 10000]
    )
    parser.add_argument("--rate-seconds", type=float, default=30)
    parser.add_argument(
        "--profile-items",
        type=int,
        default=200_000,
        help="items of the profiled burst (0: no profile)",
    )
    parser.add_argument(
        "--profile-service", choices=SERVICES, help="profile this service (default: the busiest)"
    )
    parser.add_argument("--ceiling-records", type=int, default=1_000_000)
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument(
        "--instances",
        type=lambda s: {k: int(v) for k, v in (p.split("=") for p in s.split(",") if p)},
        default={"metering": 2},
        help="instances per service, e.g. metering=2,classifier=2 (default: metering=2, "
        "one of each other service)",
    )
    parser.add_argument(
        "--tag", default=uuid.uuid4().hex[:4], help="client id tag of this run (default: random)"
    )
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)
    RUN_TAG["tag"] = args.tag
    results = Results(
        machine={**machine(), "instances": args.instances},
        command="./tierline bench " + " ".join(argv or sys.argv[1:]),
    )
    data_dir = Path(tempfile.mkdtemp(prefix="tierline-bench-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as nobody when we are root
    results.history = earlier_runs(args.out)
    asyncio.run(run(args, results, data_dir))
    results.history = [*results.history, headline(results)][-HISTORY_RUNS:]
    save(results, args.out)
    say(f"wrote {args.out}")
    return 0


HISTORY_RUNS = 10


def earlier_runs(out: str) -> list[dict[str, Any]]:
    """The run history kept in `out`'s JSON: one machine's figures vary from run to run (other
    tenants, which partitions the run's client ids hash to), so one run alone can mislead."""
    try:
        history: list[dict[str, Any]] = json.loads(Path(out).with_suffix(".json").read_text())[
            "history"
        ]
    except (OSError, ValueError, KeyError):
        return []
    return history


def headline(results: Results) -> dict[str, Any]:
    at_5000 = next((r for r in results.latency if r["offered_per_s"] == 5000), {})
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": commit or "?",
        "items": results.throughput.get("items_accepted"),
        "items_per_s": results.throughput.get("end_to_end_items_per_s"),
        "p99_ms_at_5000": at_5000.get("p99_ms"),
        "close_seconds": results.close.get("seconds"),
        "close_items": results.close.get("items"),
        "metering_instances": results.machine.get("instances", {}).get("metering", 1),
        "peak_service_rss_mib": max(
            (r["peak_rss_mib"] for n, r in results.resources.items() if n not in INFRASTRUCTURE),
            default=None,
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
