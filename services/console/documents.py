"""The documents the console's JSON API answers with (`GET /api/overview`, `GET /api/kafka`,
`GET /api/client/overview`): one typed definition each, which the routes declare (the OpenAPI
document shows them), the pages read and the tests check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.invoice import Invoice, ServiceLevelReport, TierChoice
from shared.contracts.reclassification import Note
from shared.contracts.usage import UsageReport
from shared.domain.agreement.fields import Complexity, ServiceLine


class Document(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- the Kafka half -----------------------------------------------------------------------------


class TopicRow(Document):
    topic: str
    partitions: int
    messages: int = Field(description="Records ever written (sum of the end offsets)")
    rate: float = Field(description="Messages per second over the last minute or so")
    rate_history: list[tuple[float, float]] = Field(description="(unix time, messages/s)")


class PartitionLagRow(Document):
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


class GroupRow(Document):
    group: str
    topics: list[str]
    lag: int
    partitions: list[PartitionLagRow]
    lag_history: list[tuple[float, int]] = Field(description="(unix time, total lag)")


class DeadLetterEntry(Document):
    topic: str
    partition: int
    offset: int
    time: str = Field(description="RFC 3339, UTC")
    key: str | None
    error: str | None
    error_type: str | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    original_item: int | None = Field(
        description="The item's 0-based index in a batch record (`origin_item`); null: the record"
    )
    headers: dict[str, str]
    value_preview: str


class DeadLetterTopicRow(Document):
    topic: str
    messages: int = Field(description="Records the dead-letter topic holds")
    entries: list[DeadLetterEntry] = Field(description="The latest, newest first")


class KafkaOverview(Document):
    sampled_at: str | None = Field(description="RFC 3339, UTC; null before the first sample")
    error: str | None
    topics: list[TopicRow]
    groups: list[GroupRow]
    dead_letters: list[DeadLetterTopicRow]


# --- the agreement's SPEC §11 terms: service levels and the commitment --------------------------


class LevelStanding(ServiceLevelReport):
    """One service level in a period, as the ledger measures it now (SPEC §11: the same entry
    as the invoice's `service_levels` and metering's live report), with what a miss credits."""

    service_line: ServiceLine
    complexity: list[Complexity] | None = Field(description="null: every complexity")
    within_hours: str = Field(description="Decimal string")
    clock: Literal["elapsed", "business"]
    pool_percent: str = Field(description="Its share of the pool, a decimal string")
    credit_at_stake: str = Field(
        description="What missing it credits: −(tier fee × at_risk_percent ÷ 100 × pool_percent "
        "÷ 100), money (0 or negative); billed only when `missed`"
    )


class ServiceLevelsStanding(Document):
    """Where a period stands against the agreement's service levels (SPEC §11)."""

    period: str
    tier: str = Field(
        description="The tier whose fee the credits are shares of: the tier the period is in "
        "now (a closed period: the tier it was billed at)"
    )
    tier_fee: str = Field(description="Money string")
    at_risk_percent: str = Field(description="Of the tier fee: the pool credits draw on")
    levels: list[LevelStanding] = Field(description="Every level, in the agreement's order")
    credits: str = Field(
        description="The missed levels' credits added up (0 or negative): what the period's "
        "invoice would credit with these counts"
    )


class CommitmentProgress(Document):
    """A contract year against the annual minimum (SPEC §11): what its closed periods have
    committed so far (billed for each minus its service credits) and what is still missing."""

    contract_year: int = Field(description="1 for the year starting with effective_from")
    first_period: str
    last_period: str = Field(description="The year's 12th period: its invoice trues the year up")
    annual_minimum: str = Field(description="Money string")
    periods_closed: int = Field(description="Of the year's 12 periods, how many are closed")
    committed_spend: str = Field(
        description="Money: the year's closed periods' billed totals minus their service credits"
    )
    remaining: str = Field(
        description="Money: annual_minimum − committed_spend, at least 0.00; the true-up the "
        "12th period's invoice would bill if nothing else were billed in the year"
    )
    year_closed: bool = Field(
        description="The 12th period is closed: its invoice carried the true-up (a true-up "
        "once billed stands, whatever a later note changes)"
    )


# --- the business half --------------------------------------------------------------------------


class TierStep(Document):
    """One tier of the client's agreement, for the ladder the page draws."""

    name: str
    up_to: str | None = Field(description="Decimal string; null for an unbounded last tier")
    fee: str = Field(description="Money string in the agreement's currency")


class ProjectedUsage(Document):
    """The usage carried to the period's end at the run rate so far (SPEC §8's projection)."""

    items: int
    weighted_units: str
    tier: TierChoice | None


class UsageCard(Document):
    """A client's open period: counts so far, the tier now, the projected tier, the ladder."""

    client_id: str
    name: str | None
    agreement_version: int | None
    currency: str | None
    period: str
    status: Literal["open", "closed"]
    elapsed: float = Field(description="The fraction of the period gone, 0..1")
    items: int
    unclassified_items: int
    weighted_units: str
    tier: TierChoice | None
    projected: ProjectedUsage
    tiers: list[TierStep]
    service_levels: ServiceLevelsStanding | None = Field(
        description="The open period against the agreement's service levels (re-measured at "
        "most every 30 s); null without the section"
    )
    commitment: CommitmentProgress | None = Field(
        description="The open period's contract year; null without a commitment"
    )


class ReviewQueue(Document):
    """A client's review queue (SPEC §4, §10): its unclassified items, which are never billed
    until a reclassification places them."""

    client_id: str
    period: str = Field(description="The open period")
    unclassified_items: int = Field(description="Unclassified items of the open period")
    closed_period: str | None = Field(description="The last closed period; null before any")
    closed_unclassified_items: int = Field(
        description="Unclassified items of the last closed period (0 without one)"
    )


class BusinessOverview(Document):
    clients: int = Field(description="Clients with an agreement or with usage this period")
    usage: list[UsageCard] = Field(description="The busiest clients by projected weighted units")
    invoices: list[Invoice] = Field(description="The latest invoices, newest first")
    review_queue: list[ReviewQueue] = Field(
        description="Clients with unclassified items, the most first"
    )


class Overview(Document):
    """Everything the operator page shows."""

    generated_at: str = Field(description="RFC 3339, UTC")
    poll_seconds: float
    kafka: KafkaOverview
    clients: int
    usage: list[UsageCard]
    invoices: list[Invoice]
    review_queue: list[ReviewQueue] = Field(
        description="Clients with unclassified items in the open or the last closed period, "
        "the most first"
    )


# --- the client page ----------------------------------------------------------------------------


class LadderStep(TierStep):
    """One tier on the client's ladder, and how the period's usage stands against it (SPEC §6)."""

    volume: bool = Field(description="The volume tier V: the first whose up_to W does not pass")
    scope: bool = Field(
        description="The scope tier S: the first whose scope covers every class with at least "
        "min_items items"
    )
    covers: bool = Field(description="Its scope covers every class with at least min_items items")
    current: bool = Field(
        description="The tier the period lands in now (a closed period: the tier it was billed at)"
    )


class ClassShare(Document):
    """A class's part in the period's usage."""

    service_line: ServiceLine
    complexity: Complexity
    items: int
    weighted_units: str = Field(description="Decimal string")


class TierLadder(Document):
    """Every tier of the agreement with where the period's weighted units W stand and why the
    period lands where it does: by volume, or by scope (then `beyond_volume` names the classes
    the volume tier's scope does not cover)."""

    weighted_units: str = Field(description="W, a decimal string")
    tier: TierChoice | None = Field(description="The period's tier, as its usage shows it")
    mode: Literal["upgrade", "surcharge"]
    min_items: int = Field(description="Items a class needs to count for the scope tier")
    steps: list[LadderStep] = Field(description="Ascending, as the agreement lists them")
    beyond_volume: list[ClassShare] = Field(
        description="Classes with at least min_items items that the volume tier does not cover"
    )
    out_of_scope: list[ClassShare] = Field(
        description="Classes with items that the tier now does not cover: charged "
        "out_of_scope_rate per weighted unit"
    )


class ClientOverview(Document):
    """What the client page shows of one client (`GET /api/client/overview`): a period's usage
    with the tier ladder, and the client's invoices and notes."""

    client_id: str
    name: str | None
    currency: str | None
    timezone: str = Field(description="The agreement's (periods are its calendar months); UTC")
    agreement_version: int | None
    period: str = Field(description="The period shown")
    open_period: str = Field(description="The period open now in the client's timezone")
    periods: list[str] = Field(
        description="Periods to choose from, newest first: the open one and every closed one"
    )
    usage: UsageReport = Field(description="As metering's GET /v1/usage reports it (SPEC §5)")
    ladder: TierLadder | None = Field(description="null without an agreement in force")
    service_levels: ServiceLevelsStanding | None = Field(
        description="The period against the agreement's service levels, measured now; null "
        "without the section or an agreement in force"
    )
    commitment: CommitmentProgress | None = Field(
        description="The contract year the period lies in; null without a commitment or "
        "before the first year"
    )
    invoices: list[Invoice] = Field(description="The client's invoices, newest period first")
    notes: list[Note] = Field(description="The client's notes, newest first")
