"""What the client page shows of one client: a period's usage, the tier ladder and why the period
lands where it does, where it stands against the agreement's service levels and commitment, and the
client's invoices and notes. Pure: the reads are `client.py`'s.

The usage is `shared.contracts.usage.usage_report`, the same report metering's usage API answers
(SPEC §5: a closed period keeps its billed tier); the ladder is `shared.domain.rating.decide_tier`'s
decision (SPEC §6) laid out tier by tier, so the page explains the tier without deciding it again;
the service levels and the commitment are `terms_view`'s (SPEC §11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.console.documents import ClassShare, ClientOverview, LadderStep, TierLadder
from services.console.terms_view import (
    BilledPeriod,
    commitment_progress,
    service_levels_standing,
    tier_named,
)
from shared.contracts.invoice import Invoice, TierChoice
from shared.contracts.reclassification import Note
from shared.contracts.usage import usage_report
from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelCount
from shared.domain.money import format_decimal, format_money
from shared.domain.periods import Period
from shared.domain.rating import ClassUsage, RatedClass, decide_tier
from shared.domain.usage import ClassCount, billable_usage


def _share(rated: RatedClass) -> ClassShare:
    return ClassShare(
        service_line=rated.service_class.service_line,
        complexity=rated.service_class.complexity,
        items=rated.items,
        weighted_units=format_decimal(rated.weighted_units),
    )


def tier_ladder(
    agreement: Agreement, usage: Sequence[ClassUsage], tier: TierChoice | None
) -> TierLadder:
    """Every tier of `agreement` against the period's usage: the volume tier (the first whose
    `up_to` W does not pass), the scope tier (the first whose scope covers every class with at
    least `min_items` items), which tiers' scopes cover those classes, and `tier` — the tier the
    period's usage shows (now, or the billed one of a closed period) — marked current."""
    pricing = agreement.pricing
    decision = decide_tier(pricing, usage)
    policy = pricing.scope_policy
    significant = [c for c in decision.classes if c.items >= policy.min_items]
    volume_tier = pricing.tiers[decision.volume_index]
    return TierLadder(
        weighted_units=format_decimal(decision.weighted_units),
        tier=tier,
        mode=policy.mode,
        min_items=policy.min_items,
        steps=[
            LadderStep(
                name=step.name,
                up_to=format_decimal(step.up_to) if step.up_to is not None else None,
                fee=format_money(step.fee, agreement.currency),
                volume=index == decision.volume_index,
                scope=index == decision.scope_index,
                covers=all(step.covers(c.service_class) for c in significant),
                current=tier is not None and step.name == tier.name,
            )
            for index, step in enumerate(pricing.tiers)
        ],
        beyond_volume=[_share(c) for c in significant if not volume_tier.covers(c.service_class)],
        out_of_scope=[_share(c) for c in decision.out_of_scope],
    )


def client_overview(
    *,
    client_id: str,
    agreement: Agreement | None,
    period: Period,
    open_period: Period,
    counts: Sequence[ClassCount],
    closed: Mapping[str, TierChoice | None],
    invoices: Sequence[Invoice],
    notes: Sequence[Note],
    levels: Sequence[LevelCount] | None = None,
    billed: Mapping[str, BilledPeriod] | None = None,
) -> ClientOverview:
    """The client page's document for `period`, from the client's current agreement, the
    period's counts, its closed periods (period → the tier billed, None when unbilled), its
    invoices and notes (newest first), the period's counts per service level (None: not read,
    as for an agreement without the section) and what was billed for each closed period (None:
    not read, as for an agreement without a commitment)."""
    is_closed = period.key in closed
    usage = usage_report(
        client_id=client_id,
        period=period,
        agreement=agreement,
        counts=list(counts),
        billed_tier=closed.get(period.key),
        closed=is_closed,
    )
    in_force = agreement if agreement is not None and agreement.in_force_for(period) else None
    usage_now = billable_usage(list(counts))
    standing = None
    if in_force is not None and levels is not None:
        decided = decide_tier(in_force.pricing, usage_now).tier
        tier = tier_named(in_force, usage.tier.name if usage.tier else None, decided)
        standing = service_levels_standing(in_force, period, levels, tier)
    return ClientOverview(
        client_id=client_id,
        name=agreement.name if agreement is not None else None,
        currency=agreement.currency if agreement is not None else None,
        timezone=agreement.timezone if agreement is not None else "UTC",
        agreement_version=agreement.version if agreement is not None else None,
        period=period.key,
        open_period=open_period.key,
        periods=sorted({open_period.key, period.key, *closed}, reverse=True),
        usage=usage,
        ladder=tier_ladder(in_force, usage_now, usage.tier) if in_force is not None else None,
        service_levels=standing,
        commitment=commitment_progress(agreement, period, billed)
        if agreement is not None and billed is not None
        else None,
        invoices=list(invoices),
        notes=list(notes),
    )
