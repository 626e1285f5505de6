"""Which usage alerts a metered batch raises (SPEC §5), from before/after usage. Pure."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from services.metering.alerts import (
    AlertRow,
    OpenGroup,
    PeriodUsageCache,
    UsageKey,
    UsageNow,
    alert_event,
    decide,
    may_cross,
    new_alerts,
    open_groups,
    open_period_additions,
    tally,
    usage_before,
)
from services.metering.counting import MeteredItem
from shared.domain.agreement.fields import ServiceClass
from shared.domain.periods import Period
from shared.domain.rating import ClassUsage, ThresholdAlert, threshold_alerts
from shared.domain.usage import ClassCount, billable_usage
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
    assert event.id == "acme-2026-10-80-Essential"
    assert event.model_dump(mode="json")["data"] == {
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


ACME_OCTOBER = UsageKey("acme", Period(2026, 10), "America/New_York")


def october_group(added: int) -> OpenGroup:
    return OpenGroup("acme", Period(2026, 10), ACME, tally([item(n) for n in range(added)]))


def test_open_groups_are_the_periods_of_clients_with_an_agreement_in_force() -> None:
    counted = [item(1), item(2), MeteredItem("other", "o1", OCTOBER, "hr", "basic", 1, 0, None, 1)]
    agreements = {"acme": ACME}
    [group] = open_groups(counted, agreements.get)
    assert (group.key, group.added) == (ACME_OCTOBER, tally(counted[:2]))
    from_november = ACME.model_copy(update={"effective_from": date(2026, 11, 1)})
    assert open_groups(counted, {"acme": from_november}.get) == []


def test_decide_adds_the_batch_to_the_cached_usage_and_records_the_crossed_threshold() -> None:
    known = {ACME_OCTOBER: billable_usage(after(795))}
    decision = decide([october_group(10)], known=known, loaded={}, at=OCTOBER)
    assert [(a.client_id, a.period, a.threshold) for a in decision.alerts] == [
        ("acme", "2026-10", "80:Essential")
    ]
    assert cast(dict[str, Any], decision.alerts[0].body["data"])["weighted_units"] == "805"
    assert decision.usage == [UsageNow(ACME_OCTOBER, billable_usage(after(805)), read=False)]
    assert decision.failures == []


def test_decide_takes_usage_the_cache_lacks_from_what_the_transaction_read() -> None:
    loaded = {ACME_OCTOBER: after(805)}  # read after the count: the batch is in it
    decision = decide([october_group(10)], known={}, loaded=loaded, at=OCTOBER)
    assert [a.threshold for a in decision.alerts] == ["80:Essential"]
    assert decision.usage == [UsageNow(ACME_OCTOBER, billable_usage(after(805)), read=True)]


def test_decide_records_nothing_below_a_threshold_but_still_reports_the_usage() -> None:
    decision = decide([october_group(10)], known={}, loaded={ACME_OCTOBER: after(500)}, at=OCTOBER)
    assert decision.alerts == []
    assert decision.usage == [UsageNow(ACME_OCTOBER, billable_usage(after(500)), read=True)]


def test_a_group_whose_alerts_cannot_be_worked_out_is_a_failure_and_the_others_go_on() -> None:
    broken = OpenGroup("acme", Period(2026, 9), ACME, tally([item(1)]))  # its usage was not read
    decision = decide(
        [broken, october_group(10)],
        known={},
        loaded={ACME_OCTOBER: after(805)},
        at=OCTOBER,
    )
    assert [(f.client_id, f.period, type(f.error)) for f in decision.failures] == [
        ("acme", Period(2026, 9), KeyError)
    ]
    assert [a.period for a in decision.alerts] == ["2026-10"]
    assert [u.key for u in decision.usage] == [ACME_OCTOBER]


def test_an_alert_row_is_what_metering_alerts_keeps() -> None:
    decision = decide([october_group(10)], known={}, loaded={ACME_OCTOBER: after(805)}, at=OCTOBER)
    [row] = decision.alerts
    assert row == AlertRow("acme", "2026-10", "80:Essential", row.body)
    assert row.body["id"] == "acme-2026-10-80-Essential"


def test_the_cache_keeps_the_age_of_worked_out_usage_and_renews_read_usage() -> None:
    cache = PeriodUsageCache(ttl_seconds=30)
    first, second = billable_usage(after(1)), billable_usage(after(2))
    cache.remember([UsageNow(ACME_OCTOBER, first, read=True)], now=0, since=0)
    cache.remember([UsageNow(ACME_OCTOBER, second, read=False)], now=20, since=20)
    assert cache.known([ACME_OCTOBER], now=30) == {ACME_OCTOBER: second}
    assert cache.known([ACME_OCTOBER], now=31) == {}  # 31 s since it was read
    cache.remember([UsageNow(ACME_OCTOBER, first, read=True)], now=31, since=31)
    assert cache.known([ACME_OCTOBER], now=61) == {ACME_OCTOBER: first}
