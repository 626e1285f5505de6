"""Metering's service levels on a real PostgreSQL (and Kafka for the warnings' outbox), SPEC §11:

- `GET /v1/service-levels/{client_id}?period=` counts a period's items level by level, to the
  item (business clock, class, `opened_at`, the period's bounds in the client's timezone), through
  metering's route (an in-process app with its router, as its composition root builds it);
- the service-level watch: items counted by the real handler note their period, one pass records
  exactly one warning per missed level (none for a met level, none for a closed period) and
  publishes it on `usage.alerts`, and a later pass warns of nothing again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.metering.api import Ledger, router
from services.metering.counting import MeteredItem
from services.metering.handlers import Meter, MeteringMetrics
from services.metering.level_watcher import ServiceLevelWatcher
from shared.contracts.alerts import ServiceLevelWarning
from shared.contracts.usage import ServiceLevelsReport
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.periods import parse_period
from shared.infra.auth import KeyRing
from shared.infra.http import add_operational_routes, set_state
from shared.infra.kafka import ensure_topics, make_broker
from shared.infra.kafka_connection import KafkaConnection
from shared.infra.logs import JsonFormatter
from tests.asgi import asgi_client
from tests.items_ledger import LedgerItem, seed_items
from tests.spec_example import spec_body, spec_body_with_levels

ADMIN = "admin-key-0123456789abcdef"
PERIOD = "2026-10"
OCTOBER = parse_period(PERIOD)
#: Monday 5 October 2026, 10:00 in New York (EDT, UTC-4): inside the calendar's hours.
MONDAY_10 = datetime(2026, 10, 5, 14, 0, tzinfo=UTC)
#: Friday 2 October 2026, 17:00 in New York: one business hour before the weekend.
FRIDAY_17 = datetime(2026, 10, 2, 21, 0, tzinfo=UTC)
NOW = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
#: How long a step may take before the test gives up (a deadline for failing, not a measure).
DEADLINE_SECONDS = 30


def new_client(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def with_levels(client: str) -> Agreement:
    """SPEC §3's example (America/New_York) with SPEC §11's levels: ap-turnaround (accounting
    basic/standard, 24 business hours, 95 %), care-turnaround (customer_support, 4 hours, 90 %)."""
    return parse_agreement(spec_body_with_levels(client)).with_version(2)


# --- GET /v1/service-levels ---------------------------------------------------------------------


def levels_app(
    pool: asyncpg.Pool,
    agreements: dict[str, Agreement],
    client_keys: dict[str, str] | None = None,
) -> FastAPI:
    """Metering's usage router on `pool`; `client_keys`: {key: client}."""
    app = FastAPI()
    app.state.keys = KeyRing(
        admin_keys=[ADMIN], intake_keys={"intake-key-0123456789": "jira"}, client_keys=client_keys
    )
    app.include_router(router)
    set_state(app, Ledger(pool, agreements))

    async def healthy() -> dict[str, str]:
        return {}

    add_operational_routes(app, registry=CollectorRegistry(), health=healthy)
    return app


def http_to(
    app: FastAPI, key: str = ADMIN
) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, key, base_url="http://metering")


def report_items(client: str) -> list[LedgerItem]:
    """ap-turnaround: 5 measured, 4 met (one of them 70 h elapsed but 7 business hours; one 27
    business hours); care-turnaround: 10 measured, 9 met (exactly the 90 % target). And items
    no level measures."""
    hour = timedelta(hours=1)
    ap = [
        *(
            LedgerItem(
                client, f"ap-{n}", MONDAY_10 + hour, "accounting", "basic", opened_at=MONDAY_10
            )
            for n in range(3)
        ),
        # Friday 17:00 → Monday 15:00: 1 + 6 business hours.
        LedgerItem(
            client,
            "ap-weekend",
            FRIDAY_17 + 70 * hour,
            "accounting",
            "standard",
            opened_at=FRIDAY_17,
        ),
        # Friday 17:00 → Wednesday 17:00: 1 + 9 + 9 + 8 = 27 business hours.
        LedgerItem(
            client, "ap-slow", FRIDAY_17 + 120 * hour, "accounting", "basic", opened_at=FRIDAY_17
        ),
    ]
    care = [
        LedgerItem(
            client,
            f"care-{n}",
            MONDAY_10 + timedelta(days=1),
            "customer_support",
            "standard",
            opened_at=MONDAY_10 + timedelta(days=1) - (5 * hour if n == 0 else 4 * hour),
        )
        for n in range(10)
    ]
    unmeasured = [
        LedgerItem(client, "no-opened-at", MONDAY_10, "customer_support", "basic"),
        LedgerItem(
            client,
            "unclassified",
            MONDAY_10,
            "unclassified",
            "none",
            rule_id=None,
            opened_at=MONDAY_10,
        ),
        LedgerItem(client, "ap-complex", MONDAY_10, "accounting", "complex", opened_at=FRIDAY_17),
        # 04:00Z on 1 October is midnight in New York: September's last instant is before it.
        LedgerItem(
            client,
            "september",
            datetime(2026, 10, 1, 3, 59, tzinfo=UTC),
            "customer_support",
            "basic",
            opened_at=datetime(2026, 9, 1, tzinfo=UTC),
        ),
        LedgerItem(
            client,
            "november",
            datetime(2026, 11, 1, 4, 0, tzinfo=UTC),
            "customer_support",
            "basic",
            opened_at=datetime(2026, 10, 1, tzinfo=UTC),
        ),
    ]
    return [*ap, *care, *unmeasured]


async def test_the_report_counts_each_level_to_the_item(pool: asyncpg.Pool) -> None:
    client, other = new_client("slr"), new_client("slr-other")
    await seed_items(pool, report_items(client))
    await seed_items(
        pool, [LedgerItem(other, "x", MONDAY_10, opened_at=MONDAY_10 - 9 * timedelta(hours=1))]
    )
    app = levels_app(pool, {client: with_levels(client)})
    async with http_to(app) as http:
        response = await http.get(f"/v1/service-levels/{client}", params={"period": PERIOD})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "client_id": client,
        "period": PERIOD,
        "service_levels": [
            {
                "id": "ap-turnaround",
                "measured": 5,
                "met": 4,
                "attainment_percent": "80.00",
                "target_percent": "95",
                "missed": True,
            },
            {
                "id": "care-turnaround",
                "measured": 10,
                "met": 9,
                "attainment_percent": "90.00",
                "target_percent": "90",
                "missed": False,
            },
        ],
    }
    ServiceLevelsReport.model_validate(response.json())


async def test_a_period_without_measured_items_reports_every_level_unmeasured(
    pool: asyncpg.Pool,
) -> None:
    client = new_client("slr-empty")
    app = levels_app(pool, {client: with_levels(client)})
    async with http_to(app) as http:
        response = await http.get(f"/v1/service-levels/{client}", params={"period": "2026-03"})
    assert response.status_code == 200, response.text
    levels = response.json()["service_levels"]
    assert [
        (lv["id"], lv["measured"], lv["attainment_percent"], lv["missed"]) for lv in levels
    ] == [
        ("ap-turnaround", 0, None, False),
        ("care-turnaround", 0, None, False),
    ]


async def test_without_service_levels_or_an_agreement_the_list_is_empty(
    pool: asyncpg.Pool,
) -> None:
    plain, nobody = new_client("slr-plain"), new_client("slr-nobody")
    await seed_items(pool, report_items(plain) + report_items(nobody))
    agreement = parse_agreement(spec_body(plain)).with_version(1)
    app = levels_app(pool, {plain: agreement})
    async with http_to(app) as http:
        for client in (plain, nobody):
            response = await http.get(f"/v1/service-levels/{client}", params={"period": PERIOD})
            assert response.status_code == 200, response.text
            assert response.json() == {
                "client_id": client,
                "period": PERIOD,
                "service_levels": [],
            }


@pytest.mark.parametrize(
    "query", [{}, {"period": "2026-13"}, {"period": "2100-01"}, {"period": "10-2026"}]
)
async def test_a_missing_or_bad_period_is_422_naming_it(
    pool: asyncpg.Pool, query: dict[str, str]
) -> None:
    client = new_client("slr-bad")
    app = levels_app(pool, {client: with_levels(client)})
    async with http_to(app) as http:
        response = await http.get(f"/v1/service-levels/{client}", params=query)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "period"]


async def test_a_client_key_reads_its_own_levels_only(pool: asyncpg.Pool) -> None:
    client, other = new_client("slr-own"), new_client("slr-theirs")
    await seed_items(pool, report_items(client) + report_items(other))
    keys = {f"client-key-{client}": client, f"client-key-{other}": other}
    app = levels_app(pool, {client: with_levels(client), other: with_levels(other)}, keys)
    async with http_to(app, key=f"client-key-{client}") as http:
        own = await http.get(f"/v1/service-levels/{client}", params={"period": PERIOD})
        theirs = await http.get(f"/v1/service-levels/{other}", params={"period": PERIOD})
        # Refused before the period is looked at: a bad one is still 403.
        theirs_bad = await http.get(f"/v1/service-levels/{other}", params={"period": "x"})
    assert own.status_code == 200, own.text
    assert [lv["measured"] for lv in own.json()["service_levels"]] == [5, 10]
    assert (theirs.status_code, theirs_bad.status_code) == (403, 403)
    assert "service_levels" not in theirs.text


# --- the service-level watch --------------------------------------------------------------------


def counted(
    client: str, prefix: str, n: int, *, met: bool, line: str = "customer_support"
) -> list[MeteredItem]:
    """`n` items of `client` completed on Tuesday 6 October, turned around in 1 h (`met`) or 5 h."""
    completed = MONDAY_10 + timedelta(days=1)
    turnaround = timedelta(hours=1 if met else 5)
    return [
        MeteredItem(
            client,
            f"{prefix}-{i}",
            completed + timedelta(seconds=i),
            line,
            "basic",
            1,
            None,
            "r",
            2,
            opened_at=completed + timedelta(seconds=i) - turnaround,
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class Metering:
    """Metering's real batch handler (its counting, its outbox on Kafka) and the agreements it
    reads, which a test fills."""

    meter: Meter
    agreements: dict[str, Agreement]

    def watcher(self, pool: asyncpg.Pool) -> ServiceLevelWatcher:
        """The watch as metering's composition root makes it."""
        return ServiceLevelWatcher(pool, self.agreements, self.meter.level_watch, self.meter)


@pytest.fixture
async def metering(kafka: KafkaConnection, pool: asyncpg.Pool) -> AsyncIterator[Metering]:
    await ensure_topics(kafka, partitions=6)
    registry = CollectorRegistry()
    broker = make_broker(
        kafka,
        client_id="service-level-test",
        registry=registry,
    )
    agreements: dict[str, Agreement] = {}
    meter = Meter(broker, pool, agreements, MeteringMetrics(registry))
    await broker.start()
    try:
        yield Metering(meter, agreements)
    finally:
        await broker.stop()


async def count(meter: Meter, items: list[MeteredItem]) -> None:
    """Counts `items` as a consumed batch would be (the handler's transaction, then its notes)."""
    record: Any = None  # only a refused record is looked at
    assert len(await meter.count([(record, item) for item in items])) == len(items)


async def warnings_recorded(pool: asyncpg.Pool, client: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT period, threshold, body, published FROM metering.alerts
            WHERE client_id = $1 AND threshold LIKE 'service!_level:%' ESCAPE '!'
            ORDER BY threshold""",
        client,
    )


async def published(bootstrap: str, client: str) -> list[dict[str, Any]]:
    """The service-level warnings on `usage.alerts` under `client`'s key, read to the end."""
    consumer = AIOKafkaConsumer(
        "usage.alerts",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        idle = 0
        while idle < 2:
            batches = await consumer.getmany(timeout_ms=1_000)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                found += [r for r in records if r.key == client.encode()]
    finally:
        await consumer.stop()
    events = [json.loads(r.value or b"") for r in found]
    return [e for e in events if e["type"] == "bpo.usage.service_level"]


async def publish_all(meter: Meter, pool: asyncpg.Pool, client: str) -> None:
    """The outbox publishes at most 1000 rows a call, oldest first: until the client's are out."""
    async with asyncio.timeout(DEADLINE_SECONDS):
        while any(not row["published"] for row in await warnings_recorded(pool, client)):
            await meter.publish_alerts()


async def test_one_pass_warns_once_of_each_missed_level_and_never_again(
    kafka_bootstrap: str, pool: asyncpg.Pool, metering: Metering, caplog: pytest.LogCaptureFixture
) -> None:
    client = new_client("slw")
    metering.agreements[client] = with_levels(client)
    meter = metering.meter
    # care-turnaround: 1000 of 1200 met, 83.33 % < 90 %: missed. ap-turnaround: 4 of 4: met.
    # W = 1204 lands in Professional (fee 35000.00).
    await count(meter, counted(client, "care-ok", 1000, met=True))
    await count(meter, counted(client, "care-late", 200, met=False))
    await count(meter, counted(client, "ap", 4, met=True, line="accounting"))
    watcher = metering.watcher(pool)

    with caplog.at_level(logging.WARNING, logger="services.metering.level_watcher"):
        first = await watcher.watch_once(NOW)

    assert [row.threshold for row in first] == ["service_level:care-turnaround"]
    rows = await warnings_recorded(pool, client)
    assert [(r["period"], r["threshold"]) for r in rows] == [
        (PERIOD, "service_level:care-turnaround")
    ]
    warning = ServiceLevelWarning.model_validate(rows[0]["body"])
    assert warning.model_dump(mode="json")["data"] == {
        "client_id": client,
        "period": PERIOD,
        "service_level": "care-turnaround",
        "measured": 1200,
        "met": 1000,
        "attainment_percent": "83.33",
        "target_percent": "90",
        "credit_at_stake": "-1400.00",  # 35000.00 × 10 % × 40 %
        "currency": "USD",
        "current_tier": {"name": "Professional", "reason": "volume"},
    }
    (logged,) = [r for r in caplog.records if r.name == "services.metering.level_watcher"]
    line = json.loads(JsonFormatter("metering").format(logged))
    assert line["msg"] == "a service level is below its target mid-period"
    assert {k: line[k] for k in ("client_id", "period", "service_level", "credit_at_stake")} == {
        "client_id": client,
        "period": PERIOD,
        "service_level": "care-turnaround",
        "credit_at_stake": "-1400.00",
    }

    # More items of the period, still below target: noted and looked at again, nothing new.
    await count(meter, counted(client, "care-later", 10, met=False))
    assert len(meter.level_watch) == 1
    assert await watcher.watch_once(NOW + timedelta(minutes=1)) == []
    assert len(await warnings_recorded(pool, client)) == 1

    await publish_all(meter, pool, client)
    events = await published(kafka_bootstrap, client)
    assert [e["id"] for e in events] == [f"{client}-{PERIOD}-service_level-care-turnaround"]
    assert ServiceLevelWarning.model_validate(events[0]) == warning


async def test_a_closed_period_and_a_client_without_levels_are_not_warned_of(
    pool: asyncpg.Pool, metering: Metering
) -> None:
    closed, plain = new_client("slw-closed"), new_client("slw-plain")
    metering.agreements[closed] = with_levels(closed)
    metering.agreements[plain] = parse_agreement(spec_body(plain)).with_version(1)
    for client in (closed, plain):
        await count(metering.meter, counted(client, "late", 20, met=False))
    watch = metering.meter.level_watch
    assert watch.take() == {(closed, OCTOBER)}  # a client without levels is never noted
    watch.note([(closed, OCTOBER)])
    await pool.execute(
        "INSERT INTO billing.closed_periods (client_id, period, items) VALUES ($1, $2, 20)",
        closed,
        PERIOD,
    )
    assert await metering.watcher(pool).watch_once(NOW) == []
    assert await warnings_recorded(pool, closed) == []
    assert await warnings_recorded(pool, plain) == []
    assert len(watch) == 0  # looked at, not kept for later
