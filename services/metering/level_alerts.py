"""Service-level warnings (SPEC §11, issue 13): mid-period, when a level's attainment falls below
its target, one warning per client, period and level on `usage.alerts`. Pure.

The counting stays as it was: each batch only notes, in a `WatchList`, the open periods it added
billable items to of clients whose agreement has service levels (one set update per client and
period of the batch). A periodic pass (`level_watcher.ServiceLevelWatcher`) then takes the list
and works each period out in two pure steps around its reads: the period's level counts and the
levels already warned of → `unwarned_misses` → (only when one is missed) the period's usage →
`warnings` (the outbox rows, with the credit at stake at the fee of the tier the period lands in
now).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Final

from services.metering.alerts import AlertRow
from shared.contracts.alerts import ServiceLevelWarning, ServiceLevelWarningData
from shared.contracts.invoice import TierChoice
from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelResult, credit
from shared.domain.periods import Period
from shared.domain.rating import TierDecision, decide_tier
from shared.domain.usage import ClassCount, billable_usage

#: `metering.alerts.threshold` of a warning is this and the level's id (`service_level:ap`):
#: apart from the threshold alerts' `<80|100|scope>:<tier>`, so one row per client, period and
#: level under the table's key.
WARNING_PREFIX: Final = "service_level:"

#: A client's period, by its key in the client's timezone then.
WatchedPeriod = tuple[str, Period]


def warning_threshold(level_id: str) -> str:
    return f"{WARNING_PREFIX}{level_id}"


def warned_level(threshold: str) -> str | None:
    """The level id a `metering.alerts.threshold` warned of; None for a threshold alert."""
    return threshold[len(WARNING_PREFIX) :] if threshold.startswith(WARNING_PREFIX) else None


class WatchList:
    """The open periods a batch (or a reclassification) added to since the last pass, of
    clients with service levels. Noting is a set update; the pass takes them all at once."""

    def __init__(self) -> None:
        self._due: set[WatchedPeriod] = set()

    def note(self, periods: Iterable[WatchedPeriod]) -> None:
        self._due.update(periods)

    def take(self) -> set[WatchedPeriod]:
        due, self._due = self._due, set()
        return due

    def __len__(self) -> int:
        return len(self._due)


def watched(agreement: Agreement | None, period: Period) -> bool:
    """Whether a period of a client is watched: its current agreement has service levels and
    bills the period."""
    return (
        agreement is not None
        and agreement.service_levels is not None
        and agreement.in_force_for(period)
    )


def unwarned_misses(results: Sequence[LevelResult], warned: Collection[str]) -> list[LevelResult]:
    """The levels missed so far (measured > 0 and attainment below target, compared exactly)
    that no warning was recorded for yet, in the agreement's order."""
    return [result for result in results if result.missed and result.level.id not in warned]


def warnings(
    agreement: Agreement,
    period: Period,
    misses: Sequence[LevelResult],
    counts: list[ClassCount],
    at: datetime,
) -> list[AlertRow]:
    """The outbox rows of `misses`, each a `ServiceLevelWarning` with the credit the level would
    bring if the period closed now (`counts`: the period's counts per class now)."""
    if not misses:
        return []
    terms = agreement.service_levels
    if terms is None:
        raise ValueError("service-level warnings for an agreement without service levels")
    decision = decide_tier(agreement.pricing, billable_usage(counts))
    return [
        AlertRow(
            agreement.client_id,
            period.key,
            warning_threshold(miss.level.id),
            warning_event(agreement, period, miss, decision, at).model_dump(mode="json"),
        )
        for miss in misses
    ]


def warning_event(
    agreement: Agreement,
    period: Period,
    miss: LevelResult,
    decision: TierDecision,
    at: datetime,
) -> ServiceLevelWarning:
    terms = agreement.service_levels
    assert terms is not None, "a warning is of an agreement's service level"
    attainment = miss.attainment_percent
    assert attainment is not None, "a missed level measured items"
    return ServiceLevelWarning(
        id=f"{agreement.client_id}-{period.key}-service_level-{miss.level.id}",
        subject=agreement.client_id,
        time=at,
        data=ServiceLevelWarningData(
            client_id=agreement.client_id,
            period=period.key,
            service_level=miss.level.id,
            measured=miss.measured,
            met=miss.met,
            attainment_percent=f"{attainment:f}",
            target_percent=miss.level.target_percent,
            credit_at_stake=credit(terms, miss.level, decision.tier.fee, agreement.currency),
            currency=agreement.currency,
            current_tier=TierChoice.of(decision),
        ),
    )
