"""`./tierline up`'s demo (tools/cli.py, deploy/demo, tools/workload.py) without a running system:
every demo agreement is one billing accepts, the committed one starts its contract year so that
last month is the 12th period, and the workload's `opened_at` make initech's care level a miss
and its AP level a hit — so last month's invoice carries a service credit and the true-up.
tests/e2e/test_demo.py runs the demo itself."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml

from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.agreement.fields import ServiceClass
from shared.domain.attainment import LevelCount, assess
from shared.domain.business_time import business_time
from shared.domain.commitment import contract_year, shortfall
from shared.domain.periods import Period, period_bounds
from shared.domain.rating import ClassUsage, rate
from tools import cli

LAST_MONTH = Period(2026, 11)
#: initech's rules place its demo work by queue (deploy/demo/initech.yaml).
INITECH_CLASSES = {
    "Customer Care": ServiceClass("customer_support", "basic"),
    "AP Invoices": ServiceClass("accounting", "standard"),
}


def agreement_of(client: str, period: Period = LAST_MONTH) -> tuple[cli.DemoAgreement, Agreement]:
    demo = cli.demo_agreement(cli.DEMO_DIR / f"{client}.yaml", period)
    if demo.content_type == "application/json":
        body = json.loads(demo.body)
    else:
        body = yaml.safe_load(demo.body)
        body["effective_from"] = str(body["effective_from"])  # YAML reads a date
    return demo, parse_agreement(body)


@pytest.mark.parametrize("client", cli.demo_clients())
def test_every_demo_agreement_is_a_valid_agreement_for_its_client(client: str) -> None:
    demo, agreement = agreement_of(client)
    assert agreement.client_id == client
    assert demo.committed == (agreement.commitment is not None)


@pytest.mark.parametrize(
    ("last", "start"),
    [(Period(2026, 11), date(2025, 12, 1)), (Period(2026, 12), date(2026, 1, 1))],
)
def test_the_committed_agreement_ends_its_first_contract_year_last_month(
    last: Period, start: date
) -> None:
    demo, agreement = agreement_of("initech", last)
    assert demo.committed and demo.content_type == "application/json"
    assert agreement.effective_from == cli.contract_start(last) == start
    year = contract_year(start, last)
    assert year is not None and (year.number, year.is_last(last)) == (1, True)
    assert all(agreement.in_force_for(p) for p in year.periods)


def initech_items() -> list[dict[str, Any]]:
    items = [i for i in cli._demo_workload(LAST_MONTH) if i["client_id"] == "initech"]
    return list({i["id"]: i for i in items}.values())  # a re-sent item counts once


def test_the_demo_workload_misses_one_level_and_meets_the_other() -> None:
    _, agreement = agreement_of("initech")
    terms = agreement.service_levels
    assert terms is not None and terms.calendar is not None
    calendar = terms.calendar.in_zone(agreement.timezone)
    start, end = period_bounds(LAST_MONTH, agreement.timezone)
    items = initech_items()
    counts = []
    for level in terms.levels:
        measured = met = 0
        for item in items:
            completed = datetime.fromisoformat(item["completed_at"])
            opened = datetime.fromisoformat(item["opened_at"])
            assert start <= completed < end and opened <= completed
            if not level.selects(INITECH_CLASSES[item["queue"]]):
                continue
            if level.clock == "business":
                turnaround = business_time(calendar, opened, completed)
            else:
                turnaround = completed - opened
            measured += 1
            met += turnaround.total_seconds() <= level.within_hours * 3600
        counts.append(LevelCount(measured, met))
    results = assess(terms, counts)
    assert [(r.level.id, r.measured, r.met, r.missed) for r in results] == [
        ("ap-turnaround", 60, 60, False),
        ("care-turnaround", 300, 240, True),  # 80.00 % against 90 %
    ]
    # AP invoices were opened more than a day before: only the business clock meets them.
    day = timedelta(hours=float(terms.levels[0].within_hours))
    ap_items = [i for i in items if i["queue"] == "AP Invoices"]
    assert all(
        datetime.fromisoformat(i["completed_at"]) - datetime.fromisoformat(i["opened_at"]) > day
        for i in ap_items
    )

    usage = [
        ClassUsage(INITECH_CLASSES["Customer Care"], 300, 300, 0),
        ClassUsage(INITECH_CLASSES["AP Invoices"], 60, 60, 0),
    ]
    rating = rate(agreement, usage, counts)
    assert [(line.kind, line.amount) for line in rating.lines] == [
        ("tier_fee", Decimal("15000.00")),  # Plus: W = 300 + 60 × 2 = 420 > 400
        ("service_credit", Decimal("-600.00")),  # 15000.00 × 10 % × 40 %
    ]
    # The year's eleven earlier periods are empty: each bills the Core fee.
    assert agreement.commitment is not None
    spends = [Decimal("6000.00")] * 11 + [rating.total - rating.credits]
    assert shortfall(agreement.commitment.annual_minimum, spends, "EUR") == Decimal("39000.00")


def test_the_other_clients_work_carries_no_opened_at() -> None:
    """acme's and globex's workloads are as they were: no service levels to measure."""
    assert not [
        i
        for i in cli._demo_workload(LAST_MONTH)
        if "opened_at" in i and (i["client_id"] != "initech")
    ]


def test_print_invoice_names_the_level_of_a_credit_and_the_true_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli.print_invoice(
        {
            "invoice_id": "initech-2026-11-1",
            "period_start": "2026-11-01T00:00:00+01:00",
            "period_end": "2026-12-01T00:00:00+01:00",
            "currency": "EUR",
            "tier": {"name": "Plus", "reason": "volume"},
            "usage": {"items": 360, "weighted_units": "420"},
            "lines": [
                {
                    "kind": "tier_fee",
                    "description": "Plus tier (volume)",
                    "quantity": "1",
                    "unit_price": "15000.00",
                    "amount": "15000.00",
                },
                {
                    "kind": "service_credit",
                    "description": "Service credit",
                    "quantity": "1",
                    "unit_price": "-600.00",
                    "amount": "-600.00",
                    "service_level": "care-turnaround",
                },
                {
                    "kind": "commitment_true_up",
                    "description": "true-up",
                    "quantity": "1",
                    "unit_price": "39000.00",
                    "amount": "39000.00",
                },
            ],
            "total": "53400.00",
            "service_levels": [
                {
                    "id": "ap-turnaround",
                    "measured": 60,
                    "met": 60,
                    "attainment_percent": "100.00",
                    "target_percent": "95",
                    "missed": False,
                },
                {
                    "id": "care-turnaround",
                    "measured": 300,
                    "met": 240,
                    "attainment_percent": "80.00",
                    "target_percent": "90",
                    "missed": True,
                },
            ],
        }
    )
    out = capsys.readouterr().out
    assert "service_credit      care-turnaround" in out
    assert "commitment_true_up" in out and "39000.00 EUR" in out
    assert "service level care-turnaround: 80.00% against 90% (missed)" in out
    assert "53400.00 EUR" in out
