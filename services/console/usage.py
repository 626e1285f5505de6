"""A client's open period on the page: counts so far, the tier now, the projected tier, and where
it stands against the agreement's service levels and commitment. Pure.

The projection is `shared.domain.projection`'s, the same as billing's forecast (SPEC §8): the
run rate so far carried to the period's end, rated with the same tier decision as the invoice (§6).
The service levels and the commitment are `terms_view`'s (§11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.console.documents import ProjectedUsage, ReviewQueue, TierStep, UsageCard
from services.console.terms_view import (
    BilledPeriod,
    commitment_progress,
    service_levels_standing,
)
from shared.contracts.invoice import TierChoice
from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelCount
from shared.domain.money import format_decimal, format_money
from shared.domain.periods import Period
from shared.domain.projection import progress, project_usage
from shared.domain.rating import TierDecision, decide_tier, weighted_units
from shared.domain.usage import ClassCount, billable_usage

#: Decimal places of the card's `elapsed` (as billing's forecast reports `elapsed_fraction`).
ELAPSED_PLACES = 4


@dataclass(frozen=True)
class OpenPeriod:
    """A client's open period as the ledger has it: its bounds, its counts so far, and the
    client's current agreement (None without one)."""

    agreement: Agreement | None
    period: Period
    start: datetime
    end: datetime
    counts: list[ClassCount]

    @property
    def in_force(self) -> Agreement | None:
        """The agreement if it is in force for the period (nothing is rated otherwise)."""
        agreement = self.agreement
        return agreement if agreement is not None and agreement.in_force_for(self.period) else None


def _tier(decision: TierDecision | None) -> TierChoice | None:
    return TierChoice.of(decision) if decision else None


def client_usage(
    *,
    client_id: str,
    open_period: OpenPeriod,
    now: datetime,
    closed: bool,
    levels: Sequence[LevelCount] | None = None,
    billed: Mapping[str, BilledPeriod] | None = None,
) -> UsageCard:
    """The usage card of one client: counts, tier now, projected tier, and the tier ladder;
    with the period's counts per service level (`levels`; None: not read) the levels' standing
    at the tier now, and with what was billed for each closed period (`billed`; None: not read)
    the commitment's contract year."""
    agreement, counts = open_period.agreement, open_period.counts
    usage = billable_usage(counts)
    at = progress(open_period.start, open_period.end, now)
    in_force = open_period.in_force
    decision = decide_tier(in_force.pricing, usage) if in_force else None
    projected_usage = project_usage(usage, at)
    projected = decide_tier(in_force.pricing, projected_usage) if in_force else None
    return UsageCard(
        client_id=client_id,
        name=agreement.name if agreement is not None else None,
        agreement_version=agreement.version if agreement is not None else None,
        currency=agreement.currency if agreement is not None else None,
        period=open_period.period.key,
        status="closed" if closed else "open",
        elapsed=float(at.fraction(ELAPSED_PLACES)),
        items=sum(u.items for u in usage),
        unclassified_items=unclassified_items(counts),
        weighted_units=format_decimal(decision.weighted_units) if decision else "0",
        tier=_tier(decision),
        projected=ProjectedUsage(
            items=sum(u.items for u in projected_usage),
            weighted_units=format_decimal(projected.weighted_units) if projected else "0",
            tier=_tier(projected),
        ),
        tiers=[
            TierStep(
                name=tier.name,
                up_to=format_decimal(tier.up_to) if tier.up_to is not None else None,
                fee=format_money(tier.fee, in_force.currency),
            )
            for tier in in_force.pricing.tiers
        ]
        if in_force
        else [],
        service_levels=service_levels_standing(in_force, open_period.period, levels, decision.tier)
        if in_force and decision and levels is not None
        else None,
        commitment=commitment_progress(agreement, open_period.period, billed)
        if agreement is not None and billed is not None
        else None,
    )


def projected_weighted_units(open_period: OpenPeriod, now: datetime) -> Decimal:
    """The card's `projected.weighted_units`, without the tier decision: what ranks the clients
    (the page renders only the busiest), cheap enough to compute for thousands of them."""
    in_force = open_period.in_force
    if in_force is None:
        return Decimal(0)
    at = progress(open_period.start, open_period.end, now)
    projected = project_usage(billable_usage(open_period.counts), at)
    return sum(
        (weighted_units(in_force.pricing, u.service_class, u.items, u.units) for u in projected),
        Decimal(0),
    )


def sort_key(card: UsageCard) -> tuple[Decimal, str]:
    """Busiest first (projected weighted units), then by client id."""
    return (-Decimal(card.projected.weighted_units), card.client_id)


def unclassified_items(counts: Sequence[ClassCount]) -> int:
    """The items no rule, default or built-in keyword placed: the review queue (SPEC §4)."""
    return sum(c.items for c in counts if not c.classified)


def review_queues(
    open_periods: Mapping[str, OpenPeriod],
    last_closed: Mapping[str, tuple[str, Sequence[ClassCount]]],
    *,
    limit: int,
) -> list[ReviewQueue]:
    """Every client's review queue that holds items — its open period's and its last closed
    period's unclassified items (`last_closed`: client → (period, its counts)) — the fullest
    first, then by client id; at most `limit`."""
    queues = []
    for client, open_period in open_periods.items():
        closed_period, closed_counts = last_closed.get(client, (None, ()))
        queue = ReviewQueue(
            client_id=client,
            period=open_period.period.key,
            unclassified_items=unclassified_items(open_period.counts),
            closed_period=closed_period,
            closed_unclassified_items=unclassified_items(closed_counts),
        )
        if queue.unclassified_items or queue.closed_unclassified_items:
            queues.append(queue)
    queues.sort(key=lambda q: (-(q.unclassified_items + q.closed_unclassified_items), q.client_id))
    return queues[:limit]
