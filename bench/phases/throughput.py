"""Phase 1, throughput: intake over HTTP at full speed, from the first request until PostgreSQL
holds every unique item."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from bench.common import CLIENTS, CONCURRENCY, REQUEST_ITEMS, say
from bench.load import post_all, request_bodies, wait_counted
from bench.resources import cpu_seconds
from shared.contracts.topics import (
    CLASSIFIER_GROUP,
    METERING_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
)
from shared.domain.periods import Period
from shared.infra.kafka import committed_offsets, end_offsets
from tools.supervisor import Stack


async def throughput_phase(
    stack: Stack,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    items: int,
    period: Period,
    infra: Any,
    *,
    prefix: str,
    seed: int = 1,
    opened: bool = False,
) -> dict[str, Any]:
    """One run: `items` for the clients `prefix`0..`prefix`{CLIENTS - 1} in `period`."""
    say(f"throughput: generating {items:,} items ({CLIENTS} clients, 10 % duplicates)")
    bodies, unique = request_bodies(prefix, items, period, seed=seed, opened=opened)
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
    done_at = await wait_counted(stack, pool, prefix, unique, timeout=3600)
    progress.cancel()
    cpu_after = cpu_seconds(stack, infra)
    elapsed = done_at - started
    run = {
        "period": period.key,
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
    say(f"throughput: {run}")
    return run


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run's figures (by items/s end to end), with every run and the spread."""
    rates = sorted(run["end_to_end_items_per_s"] for run in runs)
    median = sorted(runs, key=lambda run: run["end_to_end_items_per_s"])[len(runs) // 2]
    return {
        **median,
        "runs": runs,
        "spread": {
            "min": rates[0],
            "median": median["end_to_end_items_per_s"],
            "max": rates[-1],
            "range_percent": round(
                100 * (rates[-1] - rates[0]) / median["end_to_end_items_per_s"], 1
            ),
        },
    }


async def report_progress(stack: Stack, started: float) -> None:
    """How far behind intake the classifier and metering are (consumer lag, from Kafka)."""
    while True:
        await asyncio.sleep(10)
        lags = []
        for group, topic in (
            (CLASSIFIER_GROUP, WORKITEMS_COMPLETED),
            (METERING_GROUP, WORKITEMS_CLASSIFIED),
        ):
            ends = await end_offsets(stack.kafka, [topic])
            committed = await committed_offsets(stack.kafka, group)
            lags.append(sum(end - committed.get(tp, 0) for tp, end in ends.items()))
        say(
            f"  … {time.monotonic() - started:.0f}s: lag classifier {lags[0]:,}, "
            f"metering {lags[1]:,}"
        )
