"""Which usage alerts a metered batch raises (SPEC §5), from before/after usage. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from services.metering.alerts import (
    alert_event,
    may_cross,
    new_alerts,
    open_period_additions,
    tally,
    usage_before,
)
from services.metering.counting import MeteredItem
from shared.agreements import ServiceClass
from shared.ledger import ClassCount, billable_usage
from shared.periods import Period
from shared.rating import ClassUsage, ThresholdAlert, threshold_alerts
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
    raised = new_alerts(ACME, billable_usage(after(805)), tally(added))
    assert raised == (ThresholdAlert("80", "Essential"),)


def test_staying_below_eighty_percent_raises_nothing() -> None:
    assert new_alerts(ACME, billable_usage(after(799)), tally([item(1)])) == ()


def test_a_big_batch_can_cross_both_thresholds_at_once() -> None:
    added = [item(n) for n in range(500)]
    raised = new_alerts(ACME, billable_usage(after(1000)), tally(added))
    assert raised == (ThresholdAlert("80", "Essential"), ThresholdAlert("100", "Essential"))


def test_scope_moving_the_tier_up_raises_a_scope_alert() -> None:
    added = [item(n, line="accounting", complexity="complex") for n in range(1)]
    raised = new_alerts(ACME, billable_usage(after(100, accounting_complex=10)), tally(added))
    assert ThresholdAlert("scope", "Enterprise") in raised


def test_a_batch_is_tallied_per_class() -> None:
    added = [item(1), item(2), item(3, line="accounting", complexity="complex")]
    assert tally(added) == [
        ClassUsage(BASIC_CS, 2, 2, 0),
        ClassUsage(ServiceClass("accounting", "complex"), 1, 1, 0),
    ]


def test_before_is_after_minus_the_batch() -> None:
    before = usage_before(billable_usage(after(12)), tally([item(1), item(2)]))
    assert [(u.service_class, u.items) for u in before] == [(BASIC_CS, 10)]
    assert usage_before(billable_usage(after(2)), tally([item(1), item(2)])) == []


def test_late_and_unclassified_items_and_unknown_clients_raise_nothing() -> None:
    items = [item(1, late=True), item(2, line="unclassified", complexity="none"), item(3)]
    groups = open_period_additions(items, {"acme": "UTC"})
    assert groups == {("acme", Period(2026, 10)): tally([items[2]])}
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


CLASSES = [
    ServiceClass("customer_support", "basic"),
    ServiceClass("accounting", "complex"),
    ServiceClass("data_entry", "standard"),
    ServiceClass("hr", "complex"),
]


def usage_from(spec: list[tuple[int, int]]) -> list[ClassUsage]:
    totals: dict[ServiceClass, int] = {}
    for index, items in spec:
        totals[CLASSES[index]] = totals.get(CLASSES[index], 0) + items
    return [ClassUsage(cls, items, items) for cls, items in totals.items()]


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3000)), max_size=5),
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 400)), min_size=1, max_size=4),
)
def test_the_cheap_shortcut_never_hides_an_alert(
    before_spec: list[tuple[int, int]], added_spec: list[tuple[int, int]]
) -> None:
    before = usage_from(before_spec)
    after = usage_from(before_spec + added_spec)
    if not may_cross(ACME.pricing, before, after):
        assert threshold_alerts(ACME.pricing, before, after) == ()
