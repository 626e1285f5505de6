"""What the console knows about Kafka: offset samples over time, and what they mean. Pure.

A sample is every watched partition's beginning and end offsets and each consumer group's
committed offsets, taken at one instant. From a short history of samples come each topic's
message rate (end-offset deltas over time), each group's lag per partition, and each dead-letter
topic's size. Nothing here does I/O or reads the clock: the poller passes the time in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from services.console.documents import (
    DeadLetterEntry,
    DeadLetterTopicRow,
    GroupRow,
    KafkaOverview,
    PartitionLagRow,
    TopicRow,
)
from services.console.redrive import DeadLetterRecord, item_index

#: (topic, partition)
Partition = tuple[str, int]

#: Over how many seconds of samples the headline rate of a topic is measured.
RATE_WINDOW_SECONDS: Final = 10.0
#: How much of a dead-letter message's value the page shows.
VALUE_PREVIEW_CHARS: Final = 300


@dataclass(frozen=True)
class OffsetSample:
    at: float  # unix seconds
    #: First offset still in the log per partition (retention/compaction move it).
    starts: Mapping[Partition, int]
    #: Next offset to be written per partition: every record ever written is below it.
    ends: Mapping[Partition, int]
    #: group -> partition -> committed offset (only partitions the group has committed on).
    committed: Mapping[str, Mapping[Partition, int]]

    def topic_end(self, topic: str) -> int:
        return sum(end for (t, _), end in self.ends.items() if t == topic)


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed on it yet
    end: int
    lag: int


def partition_lags(sample: OffsetSample, group: str, topics: Sequence[str]) -> list[PartitionLag]:
    """The group's lag on every partition of the topics it consumes.

    A partition the group has not committed on yet lags by everything still in the log (the
    services consume from the earliest offset), not by zero.
    """
    committed = sample.committed.get(group, {})
    lags = []
    for (topic, partition), end in sorted(sample.ends.items()):
        if topic not in topics:
            continue
        position = committed.get((topic, partition))
        start = sample.starts.get((topic, partition), 0)
        behind = end - (position if position is not None else start)
        lags.append(PartitionLag(group, topic, partition, position, end, max(0, behind)))
    return lags


def rate_between(older: OffsetSample, newer: OffsetSample, topic: str) -> float:
    """Messages per second written to `topic` between two samples."""
    elapsed = newer.at - older.at
    if elapsed <= 0:
        return 0.0
    return max(0, newer.topic_end(topic) - older.topic_end(topic)) / elapsed


@dataclass
class History:
    """The last `capacity` samples, oldest first."""

    capacity: int
    samples: deque[OffsetSample] = field(default_factory=deque)

    def add(self, sample: OffsetSample) -> None:
        self.samples.append(sample)
        while len(self.samples) > self.capacity:
            self.samples.popleft()

    @property
    def latest(self) -> OffsetSample | None:
        return self.samples[-1] if self.samples else None

    def rate(self, topic: str, window: float = RATE_WINDOW_SECONDS) -> float:
        """The topic's rate over about the last `window` seconds (0 with fewer than 2 samples)."""
        if len(self.samples) < 2:
            return 0.0
        newest = self.samples[-1]
        oldest = next((s for s in self.samples if newest.at - s.at <= window), self.samples[-2])
        if oldest is newest:
            oldest = self.samples[-2]
        return rate_between(oldest, newest, topic)

    def rate_series(self, topic: str) -> list[tuple[float, float]]:
        """(time, messages/s) between each pair of consecutive samples: the sparkline."""
        pairs = zip(self.samples, list(self.samples)[1:], strict=False)
        return [(newer.at, rate_between(older, newer, topic)) for older, newer in pairs]

    def lag_series(self, group: str, topics: Sequence[str]) -> list[tuple[float, int]]:
        """(time, total lag of the group) for every sample: the lag chart."""
        return [(s.at, sum(p.lag for p in partition_lags(s, group, topics))) for s in self.samples]


def messages_in(sample: OffsetSample, topic: str) -> int:
    """Records currently held by a topic (end − beginning over its partitions)."""
    return sum(
        end - sample.starts.get(partition, 0)
        for partition, end in sample.ends.items()
        if partition[0] == topic
    )


# --- dead letters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: Mapping[str, str]
    value_preview: str

    def entry(self) -> DeadLetterEntry:
        """How the page shows it."""
        headers = self.headers
        return DeadLetterEntry(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            time=iso_time(self.timestamp_ms / 1000),
            key=self.key,
            error=headers.get("error"),
            error_type=headers.get("error_type"),
            original_topic=headers.get("origin_topic"),
            original_partition=_int_or_none(headers.get("origin_partition")),
            original_offset=_int_or_none(headers.get("origin_offset")),
            original_item=item_index(headers["origin_item"]) if "origin_item" in headers else None,
            headers=dict(headers),
            value_preview=self.value_preview,
        )


def dead_letter(record: DeadLetterRecord) -> DeadLetter:
    """A record read from a `<topic>.dlq`, decoded for display (never raises on bad bytes)."""
    text = (record.value or b"").decode(errors="replace")
    if len(text) > VALUE_PREVIEW_CHARS:
        text = text[:VALUE_PREVIEW_CHARS] + "…"
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        key=record.key.decode(errors="replace") if record.key is not None else None,
        headers=record.header_texts(),
        value_preview=text,
    )


def latest_dead_letters(entries: Iterable[DeadLetter], limit: int) -> list[DeadLetter]:
    """Newest first, by time then offset."""
    ordered = sorted(entries, key=lambda d: (d.timestamp_ms, d.offset), reverse=True)
    return ordered[:limit]


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def iso_time(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="seconds")


# --- the Kafka half of the page ---------------------------------------------------------------


def kafka_overview(
    history: History,
    *,
    topics: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    dead_letter_topics: Sequence[str],
    dead_letters: Mapping[str, list[DeadLetter]],
    error: str | None,
) -> KafkaOverview:
    """The Kafka half of the page: topics with rates, groups with lag, dead-letter topics with
    their latest entries."""
    latest = history.latest
    if latest is None:
        return KafkaOverview(sampled_at=None, error=error, topics=[], groups=[], dead_letters=[])
    return KafkaOverview(
        sampled_at=iso_time(latest.at),
        error=error,
        topics=[
            TopicRow(
                topic=topic,
                partitions=sum(1 for t, _ in latest.ends if t == topic),
                messages=latest.topic_end(topic),
                rate=round(history.rate(topic), 2),
                rate_history=[(round(t, 1), round(r, 2)) for t, r in history.rate_series(topic)],
            )
            for topic in topics
        ],
        groups=[
            GroupRow(
                group=group,
                topics=list(consumed),
                lag=sum(p.lag for p in lags),
                partitions=[
                    PartitionLagRow(
                        topic=p.topic,
                        partition=p.partition,
                        committed=p.committed,
                        end=p.end,
                        lag=p.lag,
                    )
                    for p in lags
                ],
                lag_history=[(round(t, 1), lag) for t, lag in history.lag_series(group, consumed)],
            )
            for group, consumed in groups.items()
            for lags in [partition_lags(latest, group, consumed)]
        ],
        dead_letters=[
            DeadLetterTopicRow(
                topic=topic,
                messages=messages_in(latest, topic),
                entries=[entry.entry() for entry in dead_letters.get(topic, [])],
            )
            for topic in dead_letter_topics
        ],
    )
