"""The console's Kafka side (I/O): sample offsets every few seconds, read the dead-letter tails,
and export what they say as Prometheus metrics.

One long-lived admin client and consumer serve every sample, so a page left open (or ten of them)
costs Kafka one set of offset requests per interval; the HTTP API only reads the latest result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.console.deadletters import record_of
from services.console.documents import KafkaOverview
from services.console.monitor import (
    DeadLetter,
    History,
    OffsetSample,
    Partition,
    dead_letter,
    kafka_overview,
    latest_dead_letters,
    messages_in,
    partition_lags,
)
from shared.infra.kafka_connection import KafkaConnection

log = logging.getLogger(__name__)

#: How often partition metadata is re-read (a topic created or grown later shows up).
_METADATA_SECONDS = 30.0


class KafkaProbe:
    """Reads offsets: every watched partition's bounds and each group's committed offsets."""

    def __init__(self, kafka: KafkaConnection, *, topics: Sequence[str], groups: Sequence[str]):
        self.kafka = kafka
        self.topics = list(topics)
        self.groups = list(groups)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._metadata_at = 0.0

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = self.kafka.admin(client_id="tierline-console")
            consumer = self.kafka.consumer(
                client_id="tierline-console",
                enable_auto_commit=False,
                group_id=None,
            )
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                await admin.close()
                await consumer.stop()
                raise
            self._admin, self._consumer = admin, consumer
            self._metadata_at = 0.0
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def sample(self, at: float) -> OffsetSample:
        try:
            admin, consumer = await self._connect()
            if not self._partitions or time.monotonic() - self._metadata_at > _METADATA_SECONDS:
                described = await admin.describe_topics(self.topics)
                self._partitions = sorted(
                    TopicPartition(d["topic"], p["partition"])
                    for d in described
                    if d["error_code"] == 0
                    for p in d["partitions"]
                )
                self._metadata_at = time.monotonic()
            starts = await consumer.beginning_offsets(self._partitions)
            ends = await consumer.end_offsets(self._partitions)
            committed = {group: await self._committed(admin, group) for group in self.groups}
        except BaseException:
            await self.close()  # reconnect from scratch next time
            raise
        return OffsetSample(
            at=at,
            starts={(tp.topic, tp.partition): offset for tp, offset in starts.items()},
            ends={(tp.topic, tp.partition): offset for tp, offset in ends.items()},
            committed=committed,
        )

    async def _committed(self, admin: AIOKafkaAdminClient, group: str) -> dict[Partition, int]:
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        except GroupCoordinatorNotAvailableError:
            return {}  # nothing has committed on this cluster yet
        return {
            (tp.topic, tp.partition): meta.offset
            for tp, meta in offsets.items()
            if meta.offset >= 0
        }

    async def read_tails(
        self, bounds: Mapping[Partition, tuple[int, int]], per_partition: int, timeout: float = 5
    ) -> list[DeadLetter]:
        """The last `per_partition` records of each partition, given its (start, end)."""
        wanted = {
            TopicPartition(topic, partition): (max(start, end - per_partition), end)
            for (topic, partition), (start, end) in bounds.items()
            if end > start
        }
        if not wanted:
            return []
        consumer = self.kafka.consumer(
            client_id="tierline-console-dlq",
            enable_auto_commit=False,
            group_id=None,
        )
        found: list[DeadLetter] = []
        await consumer.start()
        try:
            consumer.assign(list(wanted))
            for tp, (first, _) in wanted.items():
                consumer.seek(tp, first)
            async with asyncio.timeout(timeout):
                pending = dict(wanted)
                while pending:
                    batches = await consumer.getmany(*pending, timeout_ms=200)
                    for tp, records in batches.items():
                        found += [
                            dead_letter(record_of(r)) for r in records if r.offset < wanted[tp][1]
                        ]
                    for tp in list(pending):
                        if await consumer.position(tp) >= pending[tp][1]:
                            del pending[tp]
        finally:
            await consumer.stop()
        return found


class KafkaWatch:
    """Samples Kafka every `interval` seconds and keeps what the page and the metrics show."""

    def __init__(
        self,
        probe: KafkaProbe,
        *,
        groups: Mapping[str, Sequence[str]],
        dead_letter_topics: Sequence[str],
        interval: float,
        history_seconds: float,
        dead_letters_shown: int,
        registry: CollectorRegistry,
    ) -> None:
        self.probe = probe
        self.groups = dict(groups)
        self.dead_letter_topics = list(dead_letter_topics)
        self.interval = interval
        self.dead_letters_shown = dead_letters_shown
        self.history = History(capacity=max(2, int(history_seconds / interval) + 1))
        self.dead_letters: dict[str, list[DeadLetter]] = {}
        self.error: str | None = None
        self._dlq_bounds_read: dict[Partition, tuple[int, int]] | None = None
        self.poll_seconds = Histogram(
            "tierline_console_poll_seconds",
            "Time to sample every watched partition's offsets and the groups' commits",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.poll_errors = Counter(
            "tierline_console_poll_errors", "Kafka samples that failed", registry=registry
        )
        registry.register(_KafkaCollector(self))

    async def poll_once(self) -> None:
        started = time.perf_counter()
        try:
            sample = await self.probe.sample(time.time())
            self.history.add(sample)
            await self._refresh_dead_letters(sample)
            self.error = None
        except (KafkaError, OSError, TimeoutError) as error:
            self.poll_errors.inc()
            if self.error is None:  # once per outage, not every interval
                log.warning("kafka sample failed", extra={"error": repr(error)})
            self.error = f"Kafka unavailable: {type(error).__name__}: {error}"
        finally:
            self.poll_seconds.observe(time.perf_counter() - started)

    async def _refresh_dead_letters(self, sample: OffsetSample) -> None:
        bounds = {
            partition: (sample.starts.get(partition, 0), end)
            for partition, end in sample.ends.items()
            if partition[0] in self.dead_letter_topics
        }
        if bounds == self._dlq_bounds_read:
            return  # nothing new was dead-lettered
        entries = await self.probe.read_tails(bounds, self.dead_letters_shown)
        self.dead_letters = {
            topic: latest_dead_letters(
                (e for e in entries if e.topic == topic), self.dead_letters_shown
            )
            for topic in self.dead_letter_topics
        }
        self._dlq_bounds_read = bounds

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)

    def overview(self, topics: Sequence[str]) -> KafkaOverview:
        return kafka_overview(
            self.history,
            topics=topics,
            groups=self.groups,
            dead_letter_topics=self.dead_letter_topics,
            dead_letters=self.dead_letters,
            error=self.error,
        )


class _KafkaCollector:
    """Exports the latest sample at scrape time: lag per partition, messages per topic."""

    def __init__(self, watch: KafkaWatch) -> None:
        self.watch = watch

    def describe(self) -> list[Metric]:
        return []  # the label sets are only known once Kafka has been sampled

    def collect(self) -> Iterator[Metric]:
        latest = self.watch.history.latest
        lag = GaugeMetricFamily(
            "tierline_consumer_lag",
            "Records a consumer group has not yet committed, per partition",
            labels=["group", "topic", "partition"],
        )
        messages = CounterMetricFamily(
            "tierline_topic_messages",
            "Records ever written to a topic (sum of its partitions' end offsets)",
            labels=["topic"],
        )
        dlq = GaugeMetricFamily(
            "tierline_dead_letter_messages",
            "Records held by a dead-letter topic",
            labels=["topic"],
        )
        if latest is not None:
            for group, topics in self.watch.groups.items():
                for p in partition_lags(latest, group, topics):
                    lag.add_metric([group, p.topic, str(p.partition)], p.lag)
            for topic in sorted({t for t, _ in latest.ends}):
                messages.add_metric([topic], latest.topic_end(topic))
            for topic in self.watch.dead_letter_topics:
                dlq.add_metric([topic], messages_in(latest, topic))
        yield lag
        yield messages
        yield dlq
