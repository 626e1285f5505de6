"""Service-level credits and the annual commitment end to end (SPEC §11) on real Kafka and
PostgreSQL, the four services as processes: two clients in different timezones, a missed and a
met level, a holiday that a business clock skips, late items that flip a level (the re-rating
credits it), and the true-up on each contract year's 12th invoice — every amount to the cent.

The periods are in 2024-2025, so every weekday, holiday and DST change below is fixed: New York
leaves DST on 2 November 2025; 27 November 2025 is Thanksgiving (a Thursday); 3 and 24 November
2025 are Japanese public holidays (Mondays)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.conftest import Api, invoice_events

SUFFIX = uuid.uuid4().hex[:8]
NEW_YORK, TOKYO = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")


def rules() -> list[dict[str, Any]]:
    return [
        {"id": "ap", "when": {"queue": "AP"},
         "then": {"service_line": "accounting", "complexity": "basic"}},
        {"id": "care", "when": {"queue": "Care"},
         "then": {"service_line": "customer_support", "complexity": "basic"}},
        {"id": "it", "when": {"queue": "IT"},
         "then": {"service_line": "it_support", "complexity": "standard"}},
    ]  # fmt: skip


def new_york_agreement(client: str) -> dict[str, Any]:
    """A 1,000.00 floor; 10 % at risk: AP within one business day (9 h), care within 4 h; a
    15,000.00 annual minimum from January 2025."""
    return {
        "client_id": client,
        "currency": "USD",
        "timezone": "America/New_York",
        "effective_from": "2025-01-01",
        "classification": {"rules": rules()},
        "pricing": {
            "weights": {"basic": 1, "standard": 2, "complex": 5},
            "tiers": [
                {"name": "Essential", "up_to": 100, "fee": "1000.00"},
                {"name": "Professional", "fee": "2500.00"},
            ],
        },
        "service_levels": {
            "at_risk_percent": "10",
            "calendar": {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "hours": ["09:00", "18:00"],
                "holidays": ["2025-11-27"],
            },
            "levels": [
                {
                    "id": "ap-turnaround",
                    "service_line": "accounting",
                    "complexity": ["basic", "standard"],
                    "within_hours": 9,
                    "clock": "business",
                    "target_percent": "90",
                    "pool_percent": "60",
                },
                {
                    "id": "care-turnaround",
                    "service_line": "customer_support",
                    "within_hours": "4",
                    "target_percent": "80",
                    "pool_percent": "40",
                },
            ],
        },
        "commitment": {"annual_minimum": "15000.00"},
    }


def tokyo_agreement(client: str) -> dict[str, Any]:
    """JPY, 100,000 floor; 12 % at risk on IT within 2 business hours; a 1,500,000 minimum for
    the contract year December 2024 .. November 2025."""
    return {
        "client_id": client,
        "currency": "JPY",
        "timezone": "Asia/Tokyo",
        "effective_from": "2024-12-10",
        "classification": {"rules": rules()},
        "pricing": {
            "weights": {"basic": 1, "standard": 2, "complex": 5},
            "tiers": [{"name": "Standard", "up_to": 1000, "fee": "100000"}],
            "overage_rate": "50",
        },
        "service_levels": {
            "at_risk_percent": "12",
            "calendar": {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "hours": ["09:00", "17:00"],
                "holidays": ["2025-11-03", "2025-11-24"],
            },
            "levels": [
                {
                    "id": "it-response",
                    "service_line": "it_support",
                    "within_hours": 2,
                    "clock": "business",
                    "target_percent": "50",
                    "pool_percent": "100",
                },
            ],
        },
        "commitment": {"annual_minimum": "1500000"},
    }


def item(
    client: str, item_id: str, queue: str, opened: datetime, completed: datetime
) -> dict[str, Any]:
    return {
        "id": item_id,
        "client_id": client,
        "source": "servicenow",
        "queue": queue,
        "opened_at": opened.isoformat(),
        "completed_at": completed.isoformat(),
    }


def at(zone: ZoneInfo, day: str, clock: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=zone)


def lines(invoice: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (line["kind"], line.get("service_level") or line.get("period"), line["amount"])
        for line in invoice["lines"]
    ]


async def service_levels(api: Api, client: str, period: str) -> list[dict[str, Any]]:
    response = await api.http.get(
        f"{api.stack.url('metering')}/v1/service-levels/{client}",
        params={"period": period},
        headers=api.admin,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["client_id"], body["period"]) == (client, period)
    levels: list[dict[str, Any]] = body["service_levels"]
    return levels


def level(
    level_id: str, measured: int, met: int, attainment: str | None, target: str, missed: bool
) -> dict[str, Any]:
    return {
        "id": level_id,
        "measured": measured,
        "met": met,
        "attainment_percent": attainment,
        "target_percent": target,
        "missed": missed,
    }


async def test_credits_and_true_up_in_new_york_to_the_cent(api: Api) -> None:
    client = f"sla-ny-{SUFFIX}"
    response = await api.put_agreement(new_york_agreement(client))
    assert response.status_code == 200, response.text

    november = []
    # AP across Thanksgiving: Wed 10:00 → Fri 10:00 is 8 h + (holiday) + 1 h = 9 h: met. Without
    # the holiday it would be 18 h.
    for n in range(8):
        opened, done = at(NEW_YORK, "2025-11-26", "10:00"), at(NEW_YORK, "2025-11-28", "10:00")
        november.append(item(client, f"ap-hol-{n}", "AP", opened, done))
    # AP over a weekend: Fri 09:00 → Mon 10:00 is 9 h + 1 h = 10 h: missed.
    for n in range(2):
        opened, done = at(NEW_YORK, "2025-11-07", "09:00"), at(NEW_YORK, "2025-11-10", "10:00")
        november.append(item(client, f"ap-wkd-{n}", "AP", opened, done))
    # Care on the elapsed clock across the DST change (1 Nov 23:00 EDT → 2 Nov 02:00 EST is 4 h
    # of real time, the wall clock says 3): 8 within 4 h, 2 over (5 h).
    for n in range(8):
        opened = at(NEW_YORK, "2025-11-01", "23:00")
        done = (opened.astimezone(ZoneInfo("UTC")) + timedelta(hours=4)).astimezone(NEW_YORK)
        assert done.hour == 2
        november.append(item(client, f"care-ok-{n}", "Care", opened, done))
    for n in range(2):
        opened = at(NEW_YORK, "2025-11-12", "08:00")
        november.append(item(client, f"care-slow-{n}", "Care", opened, opened + timedelta(hours=5)))
    # Without opened_at an item is billed but not measured.
    november.append(
        {"id": "care-unmeasured", "client_id": client, "source": "jira", "queue": "Care",
         "completed_at": at(NEW_YORK, "2025-11-20", "12:00").isoformat()}
    )  # fmt: skip
    assert await api.post_items(november) == 21

    [invoice] = (await api.close("2025-11", client)).json()["invoices"]
    # W = 21 → Essential 1000.00; AP 8/10 = 80 % < 90: −(1000.00 × 10 % × 60 %) = −60.00;
    # care 8/10 = 80 % is not below 80 (met × 100 < target × measured is false).
    assert lines(invoice) == [
        ("tier_fee", None, "1000.00"),
        ("service_credit", "ap-turnaround", "-60.00"),
    ]
    assert invoice["total"] == "940.00"
    assert invoice["service_levels"] == [
        level("ap-turnaround", 10, 8, "80.00", "90", True),
        level("care-turnaround", 10, 8, "80.00", "80", False),
    ]
    credit = invoice["lines"][1]
    assert (credit["quantity"], credit["unit_price"]) == ("1", "-60.00")

    # A late care item (6 h) flips care: 8/11 = 72.73 % < 80 → −40.00 when November is re-rated.
    late_opened = at(NEW_YORK, "2025-11-18", "09:00")
    late = item(client, "care-late", "Care", late_opened, late_opened + timedelta(hours=6))
    assert await api.post_items([late]) == 1
    # The live report (metering) shows the flip as soon as the item is counted.
    async with asyncio.timeout(60):
        while True:
            live = await service_levels(api, client, "2025-11")
            if live[1]["measured"] == 11:
                break
            await asyncio.sleep(0.2)
    assert live == [
        level("ap-turnaround", 10, 8, "80.00", "90", True),
        level("care-turnaround", 11, 8, "72.73", "80", True),
    ]
    december = [
        item(client, f"dec-care-{n}", "Care", at(NEW_YORK, "2025-12-03", "09:00"),
             at(NEW_YORK, "2025-12-03", "10:00"))
        for n in range(5)
    ]  # fmt: skip
    assert await api.post_items(december) == 5

    # December is the contract year's 12th period: the year's ten periods still open close
    # first, in order (SPEC §13), each at the floor with nothing measured. The first of them,
    # January, is the next period closed after the late item was metered, so its invoice
    # re-rates November (SPEC §6): 1000.00 − 60.00 − 40.00 = 900.00, billed 940.00 → −40.00.
    # December then bills its fee and the true-up. Committed spend leaves credits out: January
    # to October 10 × 1000.00, November 1000.00 (900.00 billed, −100.00 of it credits), December
    # 1000.00 = 12000.00, so 3000.00 short of 15000.00.
    [year_end] = (await api.close("2025-12", client)).json()["invoices"]
    assert lines(year_end) == [
        ("tier_fee", None, "1000.00"),
        ("commitment_true_up", None, "3000.00"),
    ]
    assert year_end["total"] == "4000.00"
    assert year_end["service_levels"] == [
        level("ap-turnaround", 0, 0, None, "90", False),
        level("care-turnaround", 5, 5, "100.00", "80", False),
    ]
    year = await api.invoices(client_id=client)
    assert [i["period"] for i in year] == [f"2025-{m:02d}" for m in range(1, 13)]
    assert lines(year[0]) == [
        ("tier_fee", None, "1000.00"),
        ("late_adjustment", "2025-11", "-40.00"),
    ]
    assert [i["total"] for i in year] == ["960.00"] + ["1000.00"] * 9 + ["940.00", "4000.00"]
    assert year[0]["service_levels"] == [
        level("ap-turnaround", 0, 0, None, "90", False),
        level("care-turnaround", 0, 0, None, "80", False),
    ]
    # The earlier invoice is never changed; the year-end one is published as issued.
    assert year[10] == invoice
    events = await invoice_events(api.stack.kafka_bootstrap, {year_end["invoice_id"]})
    assert events[year_end["invoice_id"]]["data"] == year_end


async def test_a_holiday_keeps_a_level_met_and_the_year_is_trued_up_in_tokyo(api: Api) -> None:
    client = f"sla-tk-{SUFFIX}"
    response = await api.put_agreement(tokyo_agreement(client))
    assert response.status_code == 200, response.text
    items = []
    # Fri 31 Oct 16:00 → Tue 4 Nov 10:00: 1 h + (weekend, Culture Day) + 1 h = 2 h: met.
    for n in range(2):
        items.append(item(client, f"it-hol-{n}", "IT", at(TOKYO, "2025-10-31", "16:00"),
                          at(TOKYO, "2025-11-04", "10:00")))  # fmt: skip
    # Mon 10 Nov 09:00 → 12:00: 3 h: missed.
    for n in range(2):
        items.append(item(client, f"it-slow-{n}", "IT", at(TOKYO, "2025-11-10", "09:00"),
                          at(TOKYO, "2025-11-10", "12:00")))  # fmt: skip
    assert await api.post_items(items) == 4

    # November 2025 is the 12th period of the year that began in December 2024: eleven periods
    # close first at the floor; 2/4 = 50 % is exactly the target, so no credit; spend 12 ×
    # 100000 = 1200000 against 1500000 → a 300000 true-up.
    [invoice] = (await api.close("2025-11", client)).json()["invoices"]
    assert lines(invoice) == [
        ("tier_fee", None, "100000"),
        ("commitment_true_up", None, "300000"),
    ]
    assert invoice["total"] == "400000"
    assert invoice["service_levels"] == [level("it-response", 4, 2, "50.00", "50", False)]
    year = await api.invoices(client_id=client)
    assert [i["period"] for i in year] == ["2024-12"] + [f"2025-{m:02d}" for m in range(1, 12)]
    assert all(i["total"] == "100000" for i in year[:-1])
