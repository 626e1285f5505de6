"""The pure reclassification plan (services/metering/reclassify.py) and note decision
(services/billing/notes.py): which items move and where, the counters' deltas, the answer's
`moved`, and the note's amount (SPEC §10, §13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.billing.close_decision import ClosedPeriod, PeriodCounts
from services.billing.notes import Owed, decide_note
from services.metering.alerts import PeriodUsageCache, UsageKey, UsageNow
from services.metering.counting import Facts
from services.metering.reclassify import StoredItem, day_of, plan
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.agreement.fields import ServiceClass
from shared.domain.periods import parse_period
from shared.domain.usage import ClassCount
from tests.spec_example import spec_body

AT = datetime(2026, 10, 14, 9, 7, 30, tzinfo=UTC)


def acme(version: int = 3) -> Agreement:
    return parse_agreement(spec_body("acme")).with_version(version)


def item(
    n: int, line: str = "accounting", complexity: str = "complex", **fields: Any
) -> StoredItem:
    base: dict[str, Any] = {
        "item_id": f"T-{n}",
        "completed_at": AT + timedelta(minutes=n),
        "service_line": line,
        "complexity": complexity,
        "units": 1,
        "handling_seconds": None,
        "rule_id": "ap-invoices-large",
        "agreement_version": 2,
        "late": False,
        "source": "jira",
        "facts": Facts(queue="AP Invoices"),
    }
    return StoredItem(**{**base, **fields})


def moved(result: Any) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in result.moved]


ACCOUNTING_STANDARD = ServiceClass("accounting", "standard")


def test_an_explicit_class_moves_every_item_not_in_it_and_marks_the_reclassification() -> None:
    items = [item(1), item(2, units=30), item(3, "accounting", "standard")]
    result = plan(items, target=ACCOUNTING_STANDARD, reclassification_id="rc-1", agreement=acme())
    assert [(m.item.item_id, m.rule_id, m.agreement_version) for m in result.moves] == [
        ("T-1", "reclassification:rc-1", 2),
        ("T-2", "reclassification:rc-1", 2),
    ]
    # accounting is counted per item (only data_entry weighs units): 2 items × standard (2) = 4
    assert moved(result) == [
        {
            "from": {"service_line": "accounting", "complexity": "complex"},
            "to": {"service_line": "accounting", "complexity": "standard"},
            "items": 2,
            "units": 31,
            "weighted_units": "4",
        }
    ]


def test_the_counters_lose_the_old_class_and_gain_the_new_one_in_the_items_day() -> None:
    items = [item(1, handling_seconds=600, late=True), item(2, units=3)]
    result = plan(items, target=ACCOUNTING_STANDARD, reclassification_id="rc", agreement=acme())
    day = day_of(AT)
    assert day == datetime(2026, 10, 14, tzinfo=UTC)
    assert [
        (d.day, d.place, d.items, d.units, d.handling_seconds, d.late_items) for d in result.deltas
    ] == [
        (day, ServiceClass("accounting", "complex"), -2, -4, -600, -1),
        (day, ACCOUNTING_STANDARD, 2, 4, 600, 1),
    ]
    assert result.late_delta == 0  # a late item moved between classes is still late and billable


def test_unclassified_items_moved_into_a_class_become_billable_late_items() -> None:
    queue = [item(n, "unclassified", "none", rule_id=None, late=n < 2) for n in range(3)]
    result = plan(queue, target=ACCOUNTING_STANDARD, reclassification_id="q", agreement=acme())
    assert result.late_delta == 2
    unclassified = [d for d in result.deltas if d.place is None]
    assert [(d.items, d.late_items) for d in unclassified] == [(-3, 0)]
    assert moved(result)[0]["from"] is None


def test_classifying_again_applies_the_current_rules_and_leaves_items_that_stay() -> None:
    items = [
        item(1, facts=Facts(queue="AP Invoices"), units=25),  # still ap-invoices-large: untouched
        item(2, facts=Facts(queue="AP Invoices"), units=5),  # under 20 units: the default now
        item(3, "unclassified", "none", rule_id=None, facts=Facts(title="Password reset")),
    ]
    result = plan(items, target="rules", reclassification_id="again", agreement=acme(7))
    assert [(m.item.item_id, m.to, m.rule_id, m.agreement_version) for m in result.moves] == [
        ("T-2", ServiceClass("customer_support", "standard"), "default", 7),
        ("T-3", ServiceClass("it_support", "basic"), "password-reset", 7),
    ]
    # null sorts before every class; then by `from`, then `to`, in §3 order
    assert [(m["from"], m["to"]["service_line"]) for m in moved(result)] == [
        (None, "it_support"),
        ({"service_line": "accounting", "complexity": "complex"}, "customer_support"),
    ]


def test_classifying_again_without_an_agreement_uses_the_builtin_vocabulary() -> None:
    lost = item(1, "unclassified", "none", rule_id=None, facts=Facts(queue="Payroll"))
    result = plan([lost], target="rules", reclassification_id="b", agreement=None)
    [move] = result.moves
    assert (move.to, move.rule_id, move.agreement_version) == (
        ServiceClass("hr", "standard"),
        "builtin:hr",
        None,
    )
    assert moved(result)[0]["weighted_units"] == "0"  # no agreement: no weights


def test_a_match_of_nothing_moves_nothing() -> None:
    result = plan([], target=ACCOUNTING_STANDARD, reclassification_id="n", agreement=acme())
    assert (result.moves, result.deltas, result.moved, result.late_delta) == ([], [], (), 0)


def test_an_item_nothing_places_any_more_moves_to_unclassified_and_weighs_nothing() -> None:
    stray = item(1, facts=Facts(queue="Zzz"))
    result = plan([stray], target="rules", reclassification_id="u", agreement=None)
    [move] = result.moves
    assert (move.to, move.rule_id) == (None, None)
    assert moved(result) == [
        {
            "from": {"service_line": "accounting", "complexity": "complex"},
            "to": None,
            "items": 1,
            "units": 1,
            "weighted_units": "0",
        }
    ]


@pytest.mark.parametrize(
    ("billed", "expected"),
    [("90000.00", "-55000.00"), ("35000.00", "0.00"), ("10000.00", "25000.00")],
)
def test_a_note_bills_the_period_re_rated_now_minus_everything_billed(
    billed: str, expected: str
) -> None:
    # SPEC example 1 + 12 accounting/standard: Professional (scope) = 35000.00
    counts = [
        ClassCount("customer_support", "basic", 600, 600, 0, 0),
        ClassCount("data_entry", "standard", 150, 150, 0, 0),
        ClassCount("accounting", "standard", 12, 12, 0, 0),
    ]
    closed = ClosedPeriod("2026-10", "acme-2026-10-1", 762, Decimal(billed), 5)
    owed = Owed("acme", "rc-42", "2026-10", "client dispute #42", late_delta=-2)
    decision = decide_note(
        due=owed, closed=closed, agreement=acme(), ledger=PeriodCounts(counts), k=2, now=AT
    )
    doc = decision.note.model_dump(mode="json")
    assert doc == {
        "note_id": "acme-2026-10-n2",
        "client_id": "acme",
        "invoice_id": "acme-2026-10-1",
        "period": "2026-10",
        "currency": "USD",
        "reclassification": "rc-42",
        "reason": "reclassification rc-42: client dispute #42",
        "lines": [
            {"kind": "adjustment", "quantity": "1", "unit_price": expected, "amount": expected}
        ],
        "total": expected,
        "issued_at": "2026-10-14T09:07:30Z",
    }
    assert decision.billed_total == Decimal("35000.00")  # billed now = the period re-rated
    assert decision.late_items_settled == 3


def test_a_forgotten_client_learns_nothing_from_a_transaction_begun_before() -> None:
    cache = PeriodUsageCache(ttl_seconds=30)
    key = UsageKey("acme", parse_period("2026-10"), "UTC")
    cache.remember([UsageNow(key, [], read=True)], now=1, since=1)
    cache.forget("acme", now=2)
    assert cache.known([key], now=3) == {}
    cache.remember([UsageNow(key, [], read=True)], now=4, since=1.5)  # began before the forget
    assert cache.known([key], now=5) == {}
    cache.remember([UsageNow(key, [], read=True)], now=6, since=3)
    assert cache.known([key], now=7) == {key: []}
