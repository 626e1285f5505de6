"""The documents the console's JSON API answers with (`GET /api/overview`, `GET /api/kafka`):
one typed definition each, which the routes declare (the OpenAPI document shows them), the page
reads and the tests check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.invoice import Invoice, TierChoice


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


class BusinessOverview(Document):
    clients: int = Field(description="Clients with an agreement or with usage this period")
    usage: list[UsageCard] = Field(description="The busiest clients by projected weighted units")
    invoices: list[Invoice] = Field(description="The latest invoices, newest first")


class Overview(Document):
    """Everything the operator page shows."""

    generated_at: str = Field(description="RFC 3339, UTC")
    poll_seconds: float
    kafka: KafkaOverview
    clients: int
    usage: list[UsageCard]
    invoices: list[Invoice]
