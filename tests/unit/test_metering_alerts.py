"""Which usage alerts a metered batch raises (SPEC §5), from before/after usage. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from services.metering.alerts import alert_event, new_alerts, open_period_additions, usage_before
from services.metering.counting import MeteredItem
from shared.agreements import ServiceClass
from shared.ledger import ClassCount, billable_usage
from shared.periods import Period
from shared.rating import ThresholdAlert
from tests.unit.test_rating import ACME

BASIC_CS = ServiceClass("customer_support", "basic")
OCTOBER = datetime(2026, 10, 10, tzinfo=UTC)


def item(
    n: int, *, line: str = "customer_support", complexity: str = "basic", late: bool = False
) -> MeteredItem:
    return MeteredItem("acme", f"i{n}", OCTOBER, line, complexity, 1, 0, None, 1, late=late)


def after(basic: int, accounting_complex: int = 0) -> list[ClassCount]:
    counts = [ClassCount("customer_support", "basic", basic, basic, 0, 0)]
    if accounting_complex:
        counts.append(
            ClassCount("accounting", "complex", accounting_complex, accounting_complex, 0, 0)
        )
    return counts


def test_crossing_eighty_percent_raises_one_alert() -> None:
    added = [item(n) for n in range(10)]
    raised = new_alerts(ACME, billable_usage(after(805)), added)
    assert raised == (ThresholdAlert("80", "Essential"),)


def test_staying_below_eighty_percent_raises_nothing() -> None:
    assert new_alerts(ACME, billable_usage(after(799)), [item(1)]) == ()


def test_a_big_batch_can_cross_both_thresholds_at_once() -> None:
    added = [item(n) for n in range(500)]
    raised = new_alerts(ACME, billable_usage(after(1000)), added)
    assert raised == (ThresholdAlert("80", "Essential"), ThresholdAlert("100", "Essential"))


def test_scope_moving_the_tier_up_raises_a_scope_alert() -> None:
    added = [item(n, line="accounting", complexity="complex") for n in range(1)]
    raised = new_alerts(ACME, billable_usage(after(100, accounting_complex=10)), added)
    assert ThresholdAlert("scope", "Enterprise") in raised


def test_before_is_after_minus_the_batch() -> None:
    before = usage_before(billable_usage(after(12)), [item(1), item(2)])
    assert [(u.service_class, u.items) for u in before] == [(BASIC_CS, 10)]
    assert usage_before(billable_usage(after(2)), [item(1), item(2)]) == []


def test_late_and_unclassified_items_and_unknown_clients_raise_nothing() -> None:
    items = [item(1, late=True), item(2, line="unclassified", complexity="none"), item(3)]
    groups = open_period_additions(items, {"acme": "UTC"})
    assert groups == {("acme", Period(2026, 10)): [items[2]]}
    assert open_period_additions(items, {}) == {}


def test_the_event_names_client_period_threshold_and_tier() -> None:
    event = alert_event(
        ACME,
        Period(2026, 10),
        ThresholdAlert("80", "Essential"),
        billable_usage(after(805)),
        OCTOBER,
    )
    assert event["id"] == "acme-2026-10-80-Essential"
    assert event["data"] == {
        "client_id": "acme",
        "period": "2026-10",
        "threshold": "80",
        "tier": "Essential",
        "up_to": "1000",
        "weighted_units": "805",
        "current_tier": {"name": "Essential", "reason": "volume"},
    }
