"""Service-level warnings (SPEC §11, issue 13): which levels of an open period are warned of, and
what a warning says — the credit at stake at the fee of the tier the period lands in now. Pure;
and the counting handler's only part in it, noting the periods it counted into."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.metering.alerts import AlertDecision, OpenGroup
from services.metering.counting import MeteredItem
from services.metering.handlers import Meter, Metered, MeteringMetrics
from services.metering.level_alerts import (
    WatchList,
    unwarned_misses,
    warned_level,
    warning_threshold,
    warnings,
    watched,
)
from shared.contracts.alerts import (
    ServiceLevelWarning,
    UsageAlert,
    UsageAlertEvent,
)
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.attainment import LevelCount, assess
from shared.domain.periods import Period
from shared.domain.usage import ClassCount
from tests.spec_example import spec_body, spec_body_with_levels

OCTOBER = Period(2026, 10)
AT = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
LEVELS = parse_agreement(spec_body_with_levels("acme")).with_version(2)
PLAIN = parse_agreement(spec_body("plain")).with_version(1)


def results(ap: tuple[int, int], care: tuple[int, int]) -> Any:
    assert LEVELS.service_levels is not None
    return assess(LEVELS.service_levels, [LevelCount(*ap), LevelCount(*care)])


def care_items(items: int) -> list[ClassCount]:
    return [ClassCount("customer_support", "basic", items, items, 0, 0)]


def test_a_level_below_target_is_warned_of_and_a_met_one_is_not() -> None:
    missed = unwarned_misses(results(ap=(20, 20), care=(10, 8)), warned=set())
    assert [m.level.id for m in missed] == ["care-turnaround"]


def test_the_target_is_compared_exactly() -> None:
    # 95 % of 20 is 19: 19 met is on target, 18 is below (care: 9 of 10 is exactly 90 %).
    assert unwarned_misses(results(ap=(20, 19), care=(10, 9)), warned=set()) == []
    missed = unwarned_misses(results(ap=(20, 18), care=(10, 9)), warned=set())
    assert [m.level.id for m in missed] == ["ap-turnaround"]


def test_a_level_that_measured_nothing_is_not_missed() -> None:
    assert unwarned_misses(results(ap=(0, 0), care=(0, 0)), warned=set()) == []


def test_a_level_warned_of_before_is_not_warned_of_again() -> None:
    both = results(ap=(20, 1), care=(10, 1))
    assert [m.level.id for m in unwarned_misses(both, warned={"ap-turnaround"})] == [
        "care-turnaround"
    ]
    assert unwarned_misses(both, warned={"ap-turnaround", "care-turnaround"}) == []


def test_a_warning_carries_the_credit_at_the_fee_of_the_tier_now() -> None:
    missed = unwarned_misses(results(ap=(20, 20), care=(10, 8)), warned=set())
    (row,) = warnings(LEVELS, OCTOBER, missed, care_items(100), AT)
    assert (row.client_id, row.period, row.threshold) == (
        "acme",
        "2026-10",
        "service_level:care-turnaround",
    )
    event = ServiceLevelWarning.model_validate(row.body)
    assert event.type == "bpo.usage.service_level"
    assert (event.id, event.subject) == ("acme-2026-10-service_level-care-turnaround", "acme")
    assert event.model_dump(mode="json")["data"] == {
        "client_id": "acme",
        "period": "2026-10",
        "service_level": "care-turnaround",
        "measured": 10,
        "met": 8,
        "attainment_percent": "80.00",
        "target_percent": "90",
        # Essential's 10000.00 × 10 % at risk × 40 % of the pool.
        "credit_at_stake": "-400.00",
        "currency": "USD",
        "current_tier": {"name": "Essential", "reason": "volume"},
    }
    # 1200 weighted units land in Professional (35000.00): the stake grows with the tier.
    (more,) = warnings(LEVELS, OCTOBER, missed, care_items(1200), AT)
    assert more.body["data"]["credit_at_stake"] == "-1400.00"  # type: ignore[index, call-overload]


def test_every_missed_level_gets_its_own_row_in_order() -> None:
    missed = unwarned_misses(results(ap=(3, 1), care=(3, 0)), warned=set())
    rows = warnings(LEVELS, OCTOBER, missed, care_items(3), AT)
    assert [row.threshold for row in rows] == [
        "service_level:ap-turnaround",
        "service_level:care-turnaround",
    ]
    ap = ServiceLevelWarning.model_validate(rows[0].body).data
    assert (ap.attainment_percent, ap.credit_at_stake) == ("33.33", Decimal("-600.00"))
    assert warnings(LEVELS, OCTOBER, [], care_items(3), AT) == []


def test_usage_alerts_carry_either_event() -> None:
    missed = unwarned_misses(results(ap=(20, 20), care=(10, 8)), warned=set())
    (row,) = warnings(LEVELS, OCTOBER, missed, care_items(100), AT)
    assert isinstance(UsageAlertEvent.model_validate(row.body).root, ServiceLevelWarning)
    threshold = {
        "specversion": "1.0",
        "type": "bpo.usage.threshold",
        "source": "/tierline/metering",
        "id": "acme-2026-10-80-Essential",
        "subject": "acme",
        "time": "2026-10-20T12:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "client_id": "acme",
            "period": "2026-10",
            "threshold": "80",
            "tier": "Essential",
            "up_to": "1000",
            "weighted_units": "800",
            "current_tier": {"name": "Essential", "reason": "volume"},
        },
    }
    assert isinstance(UsageAlertEvent.model_validate(threshold).root, UsageAlert)


def test_the_warning_threshold_is_apart_from_the_threshold_alerts() -> None:
    assert warned_level(warning_threshold("care-turnaround")) == "care-turnaround"
    assert warned_level(warning_threshold("a:b")) == "a:b"
    for threshold in ("80:Essential", "100:Professional", "scope:Enterprise"):
        assert warned_level(threshold) is None


def test_only_periods_billed_under_an_agreement_with_service_levels_are_watched() -> None:
    assert watched(LEVELS, OCTOBER)
    assert not watched(None, OCTOBER)
    assert not watched(PLAIN, OCTOBER)
    assert LEVELS.effective_from == date(2026, 1, 1)
    assert not watched(LEVELS, Period(2025, 12))


def test_the_watch_list_hands_each_noted_period_to_one_pass() -> None:
    watch = WatchList()
    watch.note([("acme", OCTOBER), ("acme", OCTOBER), ("globex", OCTOBER)])
    watch.note([("acme", Period(2026, 11))])
    assert len(watch) == 3
    assert watch.take() == {("acme", OCTOBER), ("globex", OCTOBER), ("acme", Period(2026, 11))}
    assert watch.take() == set()


class NoDatabase:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


class CountedInto(Meter):
    """The real handler, its counting transaction replaced: the batch added to these groups."""

    def __init__(self, groups: tuple[OpenGroup, ...]) -> None:
        registry = CollectorRegistry()
        agreements: dict[str, Agreement] = {}
        super().__init__(
            KafkaBroker(), cast(asyncpg.Pool, NoDatabase()), agreements, MeteringMetrics(registry)
        )
        self.groups = groups

    async def meter(self, batch: list[MeteredItem]) -> Metered:
        nothing = AlertDecision(alerts=[], usage=[], failures=[])
        return Metered(counted=batch, alerts=nothing, groups=self.groups)


async def test_a_counted_batch_notes_its_open_periods_of_clients_with_service_levels() -> None:
    meter = CountedInto(
        (
            OpenGroup("acme", OCTOBER, LEVELS, []),
            OpenGroup("acme", Period(2026, 9), LEVELS, []),
            OpenGroup("plain", OCTOBER, PLAIN, []),
        )
    )
    item = MeteredItem("acme", "i1", AT, "customer_support", "basic", 1, None, None, 2)
    record = cast(ConsumerRecord[bytes, bytes], None)
    assert await meter.count([(record, item)]) == [item]
    assert meter.level_watch.take() == {("acme", OCTOBER), ("acme", Period(2026, 9))}
