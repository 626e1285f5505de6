"""Usage alerts of SPEC §5: an open period's W first crossing 80 % and 100 % of its tier's
`up_to`, and scope alone moving it up — once per threshold, client and period. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.metering.counting import MeteredItem, period_of_item
from shared.agreements import Agreement, Pricing, ServiceClass
from shared.ledger import UNCLASSIFIED
from shared.money import format_decimal
from shared.periods import Period
from shared.rating import (
    ClassUsage,
    ThresholdAlert,
    decide_tier,
    threshold_alerts,
    weighted_units,
)

ALERT_TYPE = "bpo.usage.threshold"


def open_period_additions(
    items: Iterable[MeteredItem], timezone_of: dict[str, str]
) -> dict[tuple[str, Period], list[ClassUsage]]:
    """What newly counted billable items add to open periods, by client and period."""
    groups: dict[tuple[str, Period], list[MeteredItem]] = {}
    for item in items:
        if item.late or item.service_line == UNCLASSIFIED or item.client_id not in timezone_of:
            continue
        period = period_of_item(item, timezone_of[item.client_id])
        groups.setdefault((item.client_id, period), []).append(item)
    return {key: tally(added) for key, added in groups.items()}


def tally(items: Iterable[MeteredItem]) -> list[ClassUsage]:
    """The usage `items` make up, per class (each class validated once, not once per item)."""
    sums: dict[tuple[str, str], list[int]] = {}
    for item in items:
        acc = sums.get((item.service_line, item.complexity))
        if acc is None:
            acc = sums[(item.service_line, item.complexity)] = [0, 0, 0]
        acc[0] += 1
        acc[1] += item.units
        acc[2] += item.handling_seconds
    return [
        ClassUsage(ServiceClass(line, complexity), *acc)  # type: ignore[arg-type]
        for (line, complexity), acc in sums.items()
    ]


def usage_before(after: list[ClassUsage], added: list[ClassUsage]) -> list[ClassUsage]:
    """The period's usage as it was before `added` was counted."""
    removed = {u.service_class: u for u in added}
    before = []
    for usage in after:
        gone = removed.get(usage.service_class)
        if gone is None:
            if usage.items > 0:
                before.append(usage)
        elif usage.items - gone.items > 0:
            before.append(
                ClassUsage(
                    usage.service_class,
                    usage.items - gone.items,
                    usage.units - gone.units,
                    usage.handling_seconds - gone.handling_seconds,
                )
            )
    return before


def new_alerts(
    agreement: Agreement, after: list[ClassUsage], added: list[ClassUsage]
) -> tuple[ThresholdAlert, ...]:
    before = usage_before(after, added)
    if not may_cross(agreement.pricing, before, after):
        return ()
    return threshold_alerts(agreement.pricing, before, after)


def may_cross(pricing: Pricing, before: list[ClassUsage], after: list[ClassUsage]) -> bool:
    """Whether growing from `before` to `after` can raise any alert, cheaply.

    If W passed no 80 %/100 % level of any tier and the set of classes with at least
    `min_items` items is the same, then the volume tier, the scope tier, the tier and the
    thresholds it stands at are all unchanged: no alert is possible, and the full tier
    decision (the expensive part, once per client and batch) can be skipped.
    """

    def weight(usage: list[ClassUsage]) -> Decimal:
        return sum(
            (weighted_units(pricing, u.service_class, u.items, u.units) for u in usage),
            Decimal(0),
        )

    low, high = weight(before), weight(after)
    for tier in pricing.tiers:
        if tier.up_to is not None and any(
            low < level <= high for level in (tier.up_to * Decimal("0.8"), tier.up_to)
        ):
            return True
    minimum = pricing.scope_policy.min_items

    def qualifying(usage: list[ClassUsage]) -> set[ServiceClass]:
        return {u.service_class for u in usage if u.items >= minimum}

    return qualifying(before) != qualifying(after)


def alert_event(
    agreement: Agreement,
    period: Period,
    alert: ThresholdAlert,
    after: list[ClassUsage],
    at: datetime,
) -> dict[str, Any]:
    decision = decide_tier(agreement.pricing, after)
    tier = next(t for t in agreement.pricing.tiers if t.name == alert.tier_name)
    return {
        "specversion": "1.0",
        "type": ALERT_TYPE,
        "source": "/tierline/metering",
        "id": f"{agreement.client_id}-{period.key}-{alert.threshold}-{alert.tier_name}",
        "subject": agreement.client_id,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "datacontenttype": "application/json",
        "data": {
            "client_id": agreement.client_id,
            "period": period.key,
            "threshold": alert.threshold,
            "tier": alert.tier_name,
            "up_to": format_decimal(tier.up_to) if tier.up_to is not None else None,
            "weighted_units": format_decimal(decision.weighted_units),
            "current_tier": {"name": decision.tier.name, "reason": decision.reason},
        },
    }


def usage_plus(usage: list[ClassUsage], added: list[ClassUsage]) -> list[ClassUsage]:
    """`usage` with `added` counted in."""
    totals = {u.service_class: [u.items, u.units, u.handling_seconds] for u in usage}
    for more in added:
        acc = totals.setdefault(more.service_class, [0, 0, 0])
        acc[0] += more.items
        acc[1] += more.units
        acc[2] += more.handling_seconds
    return [ClassUsage(cls, *acc) for cls, acc in totals.items()]


class PeriodUsageCache:
    """Each open period's usage as this instance last knew it, so a batch's alerts cost no
    scan of the period's counts. Entries expire: another instance (around a rebalance) may
    have counted items here too, and a stale entry may only ever *under*-count, which delays
    an alert until the entry is reloaded but never raises one early."""

    def __init__(self, ttl_seconds: float = 30.0) -> None:
        self.ttl = ttl_seconds
        self._entries: dict[tuple[str, str, str], tuple[float, list[ClassUsage]]] = {}

    def get(self, key: tuple[str, str, str], now: float) -> list[ClassUsage] | None:
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, key: tuple[str, str, str], usage: list[ClassUsage], now: float) -> None:
        loaded = self._entries.get(key, (now, usage))[0]
        self._entries[key] = (loaded, usage)

    def load(self, key: tuple[str, str, str], usage: list[ClassUsage], now: float) -> None:
        self._entries[key] = (now, usage)
