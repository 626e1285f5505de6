"""Where a client stands against its agreement's SPEC §11 terms, as the console's pages show it:
each service level's attainment in a period with the credit a miss puts at stake, and the
contract year's committed spend against the annual minimum. Pure: the reads are `client.py`'s
and `business.py`'s.

Every rule is the shared domain's, so the pages never decide one again: `attainment.assess`
decides attainment and misses from the ledger's counts (`shared.ledger.service_levels`, as
billing and metering read them), `attainment.credit` what a miss credits with the fee of the tier
the period is in, `commitment.contract_year` the year, `commitment.spend` a closed period's
committed spend (billed minus its service credits) and `commitment.shortfall` what the year's
12th period would true up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from services.console.documents import CommitmentProgress, LevelStanding, ServiceLevelsStanding
from shared.domain.agreement.agreement import Agreement
from shared.domain.agreement.pricing import Tier
from shared.domain.attainment import LevelCount, assess, credit
from shared.domain.commitment import contract_year, shortfall, spend
from shared.domain.money import format_decimal, format_money
from shared.domain.periods import Period


@dataclass(frozen=True)
class BilledPeriod:
    """What billing recorded for a closed period (`billing.closed_periods`): everything billed
    for it so far (None: closed unbilled, without an agreement in force) and the service
    credits inside that (0 or negative)."""

    billed_total: Decimal | None
    credits: Decimal


def tier_named(agreement: Agreement, name: str | None, otherwise: Tier) -> Tier:
    """The agreement's tier called `name` (a closed period's billed tier), else `otherwise`
    (the tier the counts decide now): a tier renamed since it was billed has no fee to read."""
    return next((tier for tier in agreement.pricing.tiers if tier.name == name), otherwise)


def service_levels_standing(
    agreement: Agreement, period: Period, counts: Sequence[LevelCount], tier: Tier
) -> ServiceLevelsStanding | None:
    """`period` against `agreement`'s service levels (None without the section): each level's
    counts (`counts[i]` for the i-th level), attainment and miss, and its credit at `tier`'s fee."""
    terms = agreement.service_levels
    if terms is None:
        return None
    currency = agreement.currency
    levels = []
    credited = Decimal(0)
    for result in assess(terms, counts):
        level = result.level
        at_stake = credit(terms, level, tier.fee, currency)
        if result.missed:
            credited += at_stake
        levels.append(
            LevelStanding.model_validate(
                {
                    **result.to_wire(),
                    "service_line": level.service_line,
                    "complexity": None if level.complexity is None else list(level.complexity),
                    "within_hours": format_decimal(level.within_hours),
                    "clock": level.clock,
                    "pool_percent": format_decimal(level.pool_percent),
                    "credit_at_stake": format_money(at_stake, currency),
                }
            )
        )
    return ServiceLevelsStanding(
        period=period.key,
        tier=tier.name,
        tier_fee=format_money(tier.fee, currency),
        at_risk_percent=format_decimal(terms.at_risk_percent),
        levels=levels,
        credits=format_money(credited, currency),
    )


def commitment_progress(
    agreement: Agreement, period: Period, billed: Mapping[str, BilledPeriod]
) -> CommitmentProgress | None:
    """The contract year `period` lies in, against `agreement`'s annual minimum (None without a
    commitment, or before the first year starts): `billed` holds the client's closed periods
    (period key → what was billed); each of the year's counts its committed spend, one closed
    unbilled counts nothing, one still open nothing yet."""
    commitment, effective_from = agreement.commitment, agreement.effective_from
    if commitment is None or effective_from is None:
        return None
    year = contract_year(effective_from, period)
    if year is None:
        return None
    currency = agreement.currency
    closed = [billed[p.key] for p in year.periods if p.key in billed]
    spends = [spend(b.billed_total, b.credits) for b in closed if b.billed_total is not None]
    missing = shortfall(commitment.annual_minimum, spends, currency)
    return CommitmentProgress(
        contract_year=year.number,
        first_period=year.first.key,
        last_period=year.last.key,
        annual_minimum=format_money(commitment.annual_minimum, currency),
        periods_closed=len(closed),
        committed_spend=format_money(sum(spends, Decimal(0)), currency),
        remaining=format_money(missing if missing is not None else Decimal(0), currency),
        year_closed=year.last.key in billed,
    )
