"""Usage alerts of SPEC §5: an open period's W first crossing 80 % and 100 % of its tier's
`up_to`, and scope alone moving it up — once per threshold, client and period. Pure.

A metered batch's alerts are worked out in two pure steps around one read, all inside the
batch's counting transaction (so an alert is recorded with the counts that raised it):
`open_groups` (what the newly counted items add to which open period) → the handler reads the
usage of the groups its `PeriodUsageCache` does not know (`store.load_usage`) → `decide` (the
alert rows to record, and every group's usage now, for the cache once the transaction commits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from pydantic import JsonValue

from services.metering.counting import MeteredItem, period_of_item
from shared.contracts.alerts import UsageAlert, UsageAlertData
from shared.contracts.invoice import TierChoice
from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.fields import ServiceClass
from shared.domain.agreement.pricing import Pricing
from shared.domain.periods import Period
from shared.domain.rating import (
    ClassUsage,
    ThresholdAlert,
    decide_tier,
    threshold_alerts,
    weighted_units,
)
from shared.domain.usage import UNCLASSIFIED, ClassCount, billable_usage


class AlertRow(NamedTuple):
    """One usage alert as `metering.alerts` keeps it (an outbox row)."""

    client_id: str
    period: str
    #: `"<threshold>:<tier name>"`, e.g. `"80:Essential"`.
    threshold: str
    #: The `UsageAlert` as JSON: what the row keeps and `usage.alerts` carries.
    body: dict[str, JsonValue]


class UsageKey(NamedTuple):
    """A client's period, in the timezone its agreement bills it in."""

    client_id: str
    period: Period
    timezone: str


@dataclass(frozen=True)
class OpenGroup:
    """What a batch's newly counted billable items add to one open period of a client whose
    agreement is in force for it."""

    client_id: str
    period: Period
    agreement: Agreement
    added: list[ClassUsage]

    @property
    def key(self) -> UsageKey:
        return UsageKey(self.client_id, self.period, self.agreement.timezone)


@dataclass(frozen=True)
class UsageNow:
    """A group's usage with the batch counted, for the cache once the transaction commits."""

    key: UsageKey
    usage: list[ClassUsage]
    #: Read from the ledger in the transaction (a fresh entry), not the cached usage plus the batch.
    read: bool


@dataclass(frozen=True)
class GroupFailure:
    """A group whose alerts could not be worked out (skipped; the count goes on)."""

    client_id: str
    period: Period
    error: Exception


@dataclass(frozen=True)
class AlertDecision:
    alerts: list[AlertRow]
    usage: list[UsageNow]
    failures: list[GroupFailure]


def open_groups(
    counted: Sequence[MeteredItem], agreement_of: Callable[[str], Agreement | None]
) -> list[OpenGroup]:
    """The open periods newly counted items add to, of clients with an agreement in force."""
    agreements = {
        client: agreement
        for client in {item.client_id for item in counted}
        if (agreement := agreement_of(client)) is not None
    }
    additions = open_period_additions(
        counted, {client: agreement.timezone for client, agreement in agreements.items()}
    )
    return [
        OpenGroup(client, period, agreements[client], added)
        for (client, period), added in additions.items()
        if agreements[client].in_force_for(period)
    ]


def decide(
    groups: Iterable[OpenGroup],
    *,
    known: Mapping[UsageKey, list[ClassUsage]],
    loaded: Mapping[UsageKey, list[ClassCount]],
    at: datetime,
) -> AlertDecision:
    """The alerts a counted batch raises, from each group's usage now: `known` (the usage
    before the batch, from the cache) plus what it added, else `loaded` (read in the counting
    transaction, so with the batch in it). A group whose alerts cannot be worked out is a
    failure and is skipped: it never fails the count."""
    alerts: list[AlertRow] = []
    usage: list[UsageNow] = []
    failures: list[GroupFailure] = []
    for group in groups:
        key = group.key
        try:
            if key in known:
                now = UsageNow(key, usage_plus(known[key], group.added), read=False)
            else:
                now = UsageNow(key, billable_usage(loaded[key]), read=True)
            raised = [
                AlertRow(
                    group.client_id,
                    group.period.key,
                    f"{alert.threshold}:{alert.tier_name}",
                    alert_event(group.agreement, group.period, alert, now.usage, at).model_dump(
                        mode="json"
                    ),
                )
                for alert in new_alerts(group.agreement, now.usage, group.added)
            ]
        except Exception as error:  # whatever the agreement or the counts hold
            failures.append(GroupFailure(group.client_id, group.period, error))
            continue
        alerts += raised
        usage.append(now)
    return AlertDecision(alerts, usage, failures)


def alerts_between(
    agreement: Agreement,
    period: Period,
    before: list[ClassUsage],
    after: list[ClassUsage],
    at: datetime,
) -> list[AlertRow]:
    """The alerts an open period earns when its usage changes from `before` to `after` for
    another reason than new items (a reclassification, SPEC §10): the same thresholds, once
    each (a threshold already recorded is not raised again)."""
    return [
        AlertRow(
            agreement.client_id,
            period.key,
            f"{alert.threshold}:{alert.tier_name}",
            alert_event(agreement, period, alert, after, at).model_dump(mode="json"),
        )
        for alert in threshold_alerts(agreement.pricing, before, after)
    ]


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
        acc[2] += item.handling_seconds or 0
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
) -> UsageAlert:
    decision = decide_tier(agreement.pricing, after)
    tier = next(t for t in agreement.pricing.tiers if t.name == alert.tier_name)
    return UsageAlert(
        id=f"{agreement.client_id}-{period.key}-{alert.threshold}-{alert.tier_name}",
        subject=agreement.client_id,
        time=at,
        data=UsageAlertData(
            client_id=agreement.client_id,
            period=period.key,
            threshold=alert.threshold,
            tier=alert.tier_name,
            up_to=tier.up_to,
            weighted_units=decision.weighted_units,
            current_tier=TierChoice.of(decision),
        ),
    )


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
        self._entries: dict[UsageKey, tuple[float, list[ClassUsage]]] = {}
        self._forgotten: dict[str, float] = {}

    def get(self, key: UsageKey, now: float) -> list[ClassUsage] | None:
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.ttl:
            return None
        return entry[1]

    def known(self, keys: Iterable[UsageKey], now: float) -> dict[UsageKey, list[ClassUsage]]:
        """The usage of each of `keys` the cache knows (and has not expired)."""
        return {key: usage for key in keys if (usage := self.get(key, now)) is not None}

    def put(self, key: UsageKey, usage: list[ClassUsage], now: float) -> None:
        loaded = self._entries.get(key, (now, usage))[0]
        self._entries[key] = (loaded, usage)

    def load(self, key: UsageKey, usage: list[ClassUsage], now: float) -> None:
        self._entries[key] = (now, usage)

    def forget(self, client_id: str, now: float) -> None:
        """Drop what the cache knows of a client whose counts moved (a reclassification), and
        what a transaction that began before `now` would teach it of the client."""
        self._forgotten[client_id] = now
        for key in [key for key in self._entries if key.client_id == client_id]:
            del self._entries[key]

    def remember(self, usage: Iterable[UsageNow], now: float, *, since: float) -> None:
        """What a transaction begun at `since` learned, once committed: usage read from the
        ledger starts a fresh entry; usage worked out from the cache keeps its entry's age.
        Nothing is learned of a client forgotten meanwhile."""
        for seen in usage:
            if self._forgotten.get(seen.key.client_id, -1.0) >= since:
                continue
            (self.load if seen.read else self.put)(seen.key, seen.usage, now)
