"""The fault-injection suite (issue 4): exact counts and invoices through random SIGKILLs, a broker
restart and a database restart, with 10 % re-sent duplicates and two instances each of the
classifier and metering in one consumer group.

Reduced size by default (CI). The full run (documented in the README):

    TIERLINE_CHAOS_ITEMS=200000 TIERLINE_CHAOS_RATE=2000 ./tierline test tests/e2e/test_chaos.py -s

The test computes the ground truth itself: which copy of each (client_id, id) counts (the first
one acknowledged), the class each rule gives it, and the invoice those counts are rated at.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.contracts.invoice import invoice_line
from shared.contracts.topics import CONSUMED_TOPICS, dlq
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.agreement.fields import ServiceClass
from shared.domain.periods import Period, period_bounds
from shared.domain.rating import ClassUsage, rate
from tests.e2e.conftest import Api
from tests.e2e.test_faults import read_all
from tests.e2e.test_pipeline import last_month
from tools.supervisor import Stack

ITEMS = int(os.environ.get("TIERLINE_CHAOS_ITEMS", "12000"))
RATE = float(os.environ.get("TIERLINE_CHAOS_RATE", "300"))  # items/s offered
DUPLICATES = 0.10
SENDERS = 4
REQUEST_SIZE = 100

#: queue → the class the chaos agreements' rules give it (None: no rule, no vocabulary).
QUEUES: dict[str, tuple[str, str] | None] = {
    "Care": ("customer_support", "basic"),
    "Escalations": ("customer_support", "complex"),
    "Keying": ("data_entry", "standard"),
    "Ledger": ("accounting", "standard"),
    "Payroll desk": ("hr", "basic"),
    "Service desk": ("it_support", "standard"),
    "Misc": None,
}
CLIENTS = (
    ("USD", "America/New_York"),
    ("EUR", "Europe/Berlin"),
    ("INR", "Asia/Kolkata"),
    ("JPY", "Asia/Tokyo"),
    ("GBP", "Europe/London"),
    ("USD", "UTC"),
)


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    return {
        "env": {
            "INTAKE_PUBLISH_TIMEOUT_SECONDS": "3",
            "BILLING_CLOSE_BARRIER_TIMEOUT_SECONDS": "30",
            "BILLING_AUTO_CLOSE": "false",
        },
        "instances": {"classifier": 2, "metering": 2},
    }


def chaos_agreement(client: str, currency: str, tz: str) -> dict[str, Any]:
    rules = [
        {
            "id": f"q{n}",
            "when": {"queue": queue},
            "then": {"service_line": cls[0], "complexity": cls[1]},
        }
        for n, (queue, cls) in enumerate(QUEUES.items())
        if cls is not None
    ]
    minor = "" if currency == "JPY" else ".00"
    return {
        "client_id": client,
        "currency": currency,
        "timezone": tz,
        "effective_from": "2026-01-01",
        "classification": {"rules": rules},
        "pricing": {
            "weights": {"basic": 1, "standard": "2.5", "complex": 6},
            "unit_basis": {"data_entry": "units"},
            "tiers": [
                {
                    "name": "Small",
                    "up_to": 2000,
                    "fee": f"1000{minor}",
                    "scope": {"customer_support": "all", "data_entry": "all"},
                },
                {
                    "name": "Medium",
                    "up_to": 8000,
                    "fee": f"3000{minor}",
                    "scope": {
                        "customer_support": "all",
                        "data_entry": "all",
                        "hr": "all",
                        "accounting": ["basic", "standard"],
                    },
                },
                {"name": "Large", "up_to": 30000, "fee": f"9000{minor}", "scope": "all"},
            ],
            "overage_rate": "0.75" if currency != "JPY" else "75",
            "scope_policy": {
                "mode": "upgrade",
                "min_items": 25,
                "out_of_scope_rate": "1.25" if currency != "JPY" else "125",
            },
        },
    }


@dataclass
class Truth:
    """What the counts must be: the first acknowledged copy of each (client_id, id) counts."""

    counted: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    acked: list[dict[str, Any]] = field(default_factory=list)
    sent_copies: int = 0
    duplicates: int = 0
    requests: int = 0
    retries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def acknowledge(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            key = (item["client_id"], item["id"])
            if key not in self.counted:
                self.counted[key] = item
                self.acked.append(item)


@dataclass
class Chaos:
    kills: Counter[str] = field(default_factory=Counter)
    broker_restarts: int = 0
    database_restarts: int = 0


def make_item(
    rng: random.Random, n: int, clients: list[str], period: Period, tz_of: dict[str, str]
) -> dict[str, Any]:
    client = rng.choice(clients)
    start, end = period_bounds(period, tz_of[client])
    at = start + timedelta(seconds=rng.uniform(0, (end - start).total_seconds() - 1))
    return {
        "id": f"c{n}",
        "client_id": client,
        "source": "chaos",
        "completed_at": at.isoformat(),
        "queue": rng.choices(list(QUEUES), weights=(40, 5, 20, 10, 10, 10, 5))[0],
        "units": rng.choice((1, 1, 2, 3)),
        "handling_seconds": rng.randint(0, 5000),
    }


async def send(api: Api, truth: Truth, batch: list[dict[str, Any]]) -> None:
    """Post until intake takes it: 503s and dropped connections are retried, as SPEC §2 asks."""
    url = f"{api.stack.url('intake')}/v1/work-items"
    delay = 0.2
    while True:
        truth.requests += 1
        try:
            response = await api.http.post(url, json=batch, headers=api.intake, timeout=30)
            truth.statuses[str(response.status_code)] += 1
            if response.status_code == 202:
                truth.acknowledge(batch)
                return
            assert response.status_code in (502, 503), response.text
        except httpx.TransportError as error:
            truth.statuses[type(error).__name__] += 1
        truth.retries += 1
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def copies_to_send(rng: random.Random, truth: Truth, item: dict[str, Any]) -> list[dict[str, Any]]:
    """`item`, and in DUPLICATES of the cases a re-send of an item already acknowledged,
    differing in other fields: it must not count, and the first copy's fields must stand."""
    copies = [item]
    if truth.acked and rng.random() < DUPLICATES:
        original = rng.choice(truth.acked[-5000:])
        copies.append({**original, "units": original["units"] + 7, "queue": "Misc"})
        truth.duplicates += 1
    truth.sent_copies += len(copies)
    return copies


async def sender(
    api: Api,
    truth: Truth,
    rng: random.Random,
    numbers: range,
    clients: list[str],
    period: Period,
    tz_of: dict[str, str],
    *,
    rate: float = RATE,
    senders: int = SENDERS,
) -> None:
    """Send `numbers` as new items (10 % re-sent duplicates among them) at `rate / senders`
    items a second, recording every acknowledged copy in `truth`."""
    per_request = REQUEST_SIZE / (rate / senders)
    batch: list[dict[str, Any]] = []
    for n in numbers:
        batch += copies_to_send(rng, truth, make_item(rng, n, clients, period, tz_of))
        if len(batch) >= REQUEST_SIZE:
            started = time.monotonic()
            await send(api, truth, batch)
            batch = []
            await asyncio.sleep(max(0.0, per_request - (time.monotonic() - started)))
    if batch:
        await send(api, truth, batch)


async def chaos_monkey(
    stack: Stack, infra: Any, chaos: Chaos, done: asyncio.Event, progress: Any, rng: random.Random
) -> None:
    victims = [name for name in stack.processes if name != "console"]
    while not done.is_set():
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        if done.is_set():
            break
        share = progress()
        if chaos.broker_restarts == 0 and share > 0.35:
            await asyncio.to_thread(infra.kafka.restart)
            chaos.broker_restarts += 1
            continue
        if chaos.database_restarts == 0 and share > 0.65:
            await asyncio.to_thread(infra.postgres.restart)
            chaos.database_restarts += 1
            continue
        victim = rng.choice(victims)
        process = stack.processes[victim]
        await asyncio.to_thread(process.kill)
        chaos.kills[victim] += 1
        await asyncio.sleep(rng.uniform(0.1, 1.0))
        process.start()
        await asyncio.to_thread(process.wait_healthy, 120)


def expected_usage(truth: Truth, client: str) -> tuple[list[ClassUsage], int]:
    classes: dict[tuple[str, str], list[int]] = {}
    unclassified = 0
    for (owner, _), item in truth.counted.items():
        if owner != client:
            continue
        cls = QUEUES[item["queue"]]
        if cls is None:
            unclassified += 1
            continue
        acc = classes.setdefault(cls, [0, 0, 0])
        acc[0] += 1
        acc[1] += item["units"]
        acc[2] += item["handling_seconds"]
    usage = [
        ClassUsage(ServiceClass(line, complexity), *acc)  # type: ignore[arg-type]
        for (line, complexity), acc in classes.items()
    ]
    return usage, unclassified


async def put_chaos_agreements(
    api: Api, name: str
) -> tuple[list[str], dict[str, str], dict[str, Agreement]]:
    """One client per entry of CLIENTS, named `name` with `{n}` its number, each with its
    agreement PUT through billing: the clients, each one's timezone, and each one's agreement
    (version 1) as the ground truth rates it."""
    clients = [name.format(n=n) for n in range(len(CLIENTS))]
    tz_of = {client: tz for client, (_, tz) in zip(clients, CLIENTS, strict=True)}
    agreements = {}
    for client, (currency, tz) in zip(clients, CLIENTS, strict=True):
        body = chaos_agreement(client, currency, tz)
        assert (await api.put_agreement(body)).status_code == 200
        agreements[client] = parse_agreement(body).with_version(1)
    return clients, tz_of, agreements


async def test_exactly_once_through_kills_and_restarts(api: Api, run_id: str, infra: Any) -> None:
    rng = random.Random(int(os.environ.get("TIERLINE_CHAOS_SEED", "20261127")))
    period = last_month()
    clients, tz_of, agreements = await put_chaos_agreements(api, f"chaos{{n}}-{run_id}")

    truth, chaos, done = Truth(), Chaos(), asyncio.Event()
    started = time.monotonic()
    share = ITEMS // SENDERS
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
            )
        )
        for k in range(SENDERS)
    ]
    monkey = asyncio.create_task(
        chaos_monkey(api.stack, infra, chaos, done, lambda: len(truth.counted) / ITEMS, rng)
    )
    await asyncio.gather(*senders)
    done.set()
    await monkey
    sent_seconds = time.monotonic() - started
    for process in api.stack.processes.values():
        if not process.alive():
            process.start()
        await asyncio.to_thread(process.wait_healthy, 120)

    mismatches = await close_and_compare(api, truth, agreements, period)
    dead_valid = await dead_lettered_items(api, truth)

    print(
        f"\nchaos: {ITEMS} items ({truth.sent_copies} copies sent, {truth.duplicates} re-sent "
        f"duplicates) in {sent_seconds:.1f}s; {truth.requests} requests, {truth.retries} retried "
        f"{dict(truth.statuses)}; kills {dict(chaos.kills)} = {sum(chaos.kills.values())}; "
        f"broker restarts {chaos.broker_restarts}, database restarts {chaos.database_restarts}; "
        f"valid items dead-lettered {len(dead_valid)}; mismatches {len(mismatches)}"
    )
    assert len(truth.counted) == ITEMS // SENDERS * SENDERS
    assert chaos.broker_restarts == 1 and chaos.database_restarts == 1
    assert sum(chaos.kills.values()) >= 3
    assert not dead_valid
    assert not mismatches, "\n".join(mismatches)


async def close_and_compare(
    api: Api, truth: Truth, agreements: dict[str, Agreement], period: Period
) -> list[str]:
    """Close `period` for each client of `agreements` and compare its usage (items,
    unclassified, late, per class) and its invoice (lines and total, to the cent) with what
    `truth` says they must be; one line per difference (none: exact to the cent)."""
    mismatches: list[str] = []
    for client, agreement in agreements.items():
        closed = await close_with_retries(api, period.key, client)
        usage, unclassified = expected_usage(truth, client)
        got = await api.usage(client, period.key)
        want_items = sum(u.items for u in usage)
        if (got["items"], got["unclassified_items"], got["late_items"]) != (
            want_items,
            unclassified,
            0,
        ):
            mismatches.append(
                f"{client}: usage {got['items']}/{got['unclassified_items']}/"
                f"{got['late_items']} != {want_items}/{unclassified}/0"
            )
        by_class = {
            (c["service_line"], c["complexity"]): (c["items"], c["units"], c["handling_seconds"])
            for c in got["by_class"]
        }
        want_by_class = {
            (u.service_class.service_line, u.service_class.complexity): (
                u.items,
                u.units,
                u.handling_seconds,
            )
            for u in usage
        }
        if by_class != want_by_class:
            mismatches.append(f"{client}: by_class {by_class} != {want_by_class}")
        rating = rate(agreement, usage)
        [invoice] = closed["invoices"]
        currency = agreement.currency
        want_lines = [invoice_line(line, currency).model_dump(mode="json") for line in rating.lines]
        if invoice["lines"] != want_lines or Decimal(invoice["total"]) != rating.total:
            mismatches.append(f"{client}: invoice {invoice['lines']} != {want_lines}")
        if invoice["usage"]["items"] != want_items:  # every accepted, classified item billed
            mismatches.append(
                f"{client}: invoice items {invoice['usage']['items']} != {want_items}"
            )
    return mismatches


async def dead_lettered_items(api: Api, truth: Truth) -> list[Any]:
    """Dead letters on every consumed topic's .dlq that carry an item `truth` counts."""
    ours = {(c, i) for c, i in truth.counted}
    dead = await read_all(api.stack.kafka_bootstrap, [dlq(t) for t in CONSUMED_TOPICS])
    return [r for r in dead if _item_key(r.value) in ours]


def _item_key(value: bytes | None) -> tuple[str, str] | None:
    try:
        item = json.loads(value or b"")
        return (item["client_id"], item["id"])
    except (ValueError, KeyError, TypeError):
        return None


async def close_with_retries(api: Api, period: str, client: str) -> dict[str, Any]:
    deadline = datetime.now() + timedelta(minutes=3)
    while True:
        try:
            response = await api.close(period, client)
            if response.status_code == 200:
                result: dict[str, Any] = response.json()
                return result
        except httpx.TransportError:
            pass
        assert datetime.now() < deadline, "the period never closed"
        await asyncio.sleep(2)
