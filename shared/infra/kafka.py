"""Kafka plumbing every service shares: the broker, topics, dead letters, compacted views, offsets.

The producer is configured for durability first (acks=all, idempotence): intake answers 202 only
once Kafka has the write, and a retried send never duplicates a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaError,
    KafkaTimeoutError,
    ProducerClosed,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.contracts.topics import ALL_TOPICS, COMPACTED_TOPICS, CONSUMED_TOPICS, DLQ_SUFFIX, dlq
from shared.contracts.workitems import (
    CompletedWorkItem,
    ContractError,
    ItemRecords,
    batch_element,
    is_batch,
)
from shared.infra.kafka_connection import KafkaConnection, check_access
from shared.infra.logs import record_fields
from shared.infra.settings import CommonSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item", bound=CompletedWorkItem)


#: Fetch settings of the hot-path consumers: under load the broker waits up to 10 ms to fill a
#: fetch with 64 KiB instead of answering each poll with a handful of records. Fewer, fuller
#: fetches cost the broker less CPU per item and make fuller batches downstream (one database
#: transaction per batch). Since records carry batches of items, a fetch holds many items even
#: at 10 ms, which halved the time an item waits per stage against 25 ms (p99 at 5,000 items/s
#: about 420 → 160-260 ms); 5 ms cut it little more and cost the broker half as much again.
HOT_FETCH_MIN_BYTES: Final = 64 * 1024
HOT_FETCH_MAX_WAIT_MS: Final = 10


#: The largest record a dead-letter topic takes. A dead letter keeps the original value and adds
#: headers (the error, the origin), so a record that just fit its own topic (the broker's default
#: limit is about 1 MiB) must still fit its dead-letter topic.
DLQ_MAX_BYTES: Final = 4 * 1024 * 1024


def make_broker(
    kafka: KafkaConnection,
    *,
    client_id: str,
    registry: CollectorRegistry | None = None,
    linger_ms: int = 5,
) -> KafkaBroker:
    middlewares = (KafkaPrometheusMiddleware(registry=registry),) if registry is not None else ()
    return kafka.broker(
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        # Dead letters may be as large as DLQ_MAX_BYTES; every other topic's limit is the
        # broker's, checked by the broker.
        max_request_size=DLQ_MAX_BYTES + 64 * 1024,
        request_timeout_ms=15_000,
        allow_auto_create_topics=False,
        graceful_timeout=15.0,
        middlewares=middlewares,
        logger=logging.getLogger(f"faststream.{client_id}"),
    )


def json_bytes(value: Any) -> bytes:
    return orjson.dumps(value)


#: Copies of each topic when TIERLINE_TOPIC_REPLICATION is unset and the cluster has the
#: brokers for them: three copies survive the loss of any one broker with two still in sync.
DEFAULT_REPLICATION: Final = 3
#: `min.insync.replicas` of a topic with three or more copies: an acks=all write (every
#: producer's) is acknowledged only once two brokers have it, so no single broker's death loses
#: an acknowledged record, and writes go on while one broker is down.
DURABLE_MIN_INSYNC: Final = 2


def topic_replication(brokers: int, configured: int | None) -> int:
    """The replication factor of the topics Tierline creates on a cluster of `brokers` live
    brokers: TIERLINE_TOPIC_REPLICATION when set (it cannot exceed the brokers: Kafka would
    refuse the topics), else as many copies as there are brokers, up to DEFAULT_REPLICATION."""
    if brokers < 1:
        raise ValueError("the Kafka cluster reported no live broker")
    if configured is None:
        return min(DEFAULT_REPLICATION, brokers)
    if configured > brokers:
        raise ValueError(
            f"TIERLINE_TOPIC_REPLICATION is {configured} but the Kafka cluster has "
            f"{brokers} live broker{'s' if brokers != 1 else ''}"
        )
    return configured


def topic_configs(topic: str, *, replication: int = 1) -> dict[str, str]:
    """The topic-level settings Tierline creates `topic` with, at `replication` copies."""
    configs: dict[str, str] = {}
    if topic in COMPACTED_TOPICS:
        configs["cleanup.policy"] = "compact"
    if topic.endswith(DLQ_SUFFIX):
        configs["max.message.bytes"] = str(DLQ_MAX_BYTES)
    if replication >= DEFAULT_REPLICATION:
        configs["min.insync.replicas"] = str(DURABLE_MIN_INSYNC)
    return configs


async def ensure_topics(
    kafka: KafkaConnection,
    *,
    partitions: int,
    replication: int | None = None,
    attempts: int = 30,
) -> None:
    """Create every Tierline topic (and each consumed topic's DLQ) if it does not exist, with
    `topic_replication` copies (`replication` is TIERLINE_TOPIC_REPLICATION: None counts the
    cluster's live brokers)."""
    wanted = [*ALL_TOPICS, *(dlq(topic) for topic in CONSUMED_TOPICS)]
    for attempt in range(1, attempts + 1):
        admin = kafka.admin(client_id="tierline-admin")
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [topic for topic in wanted if topic not in existing]
            if missing:
                # Brokers are counted only to create: a restart while one is down must not fail.
                brokers = len((await admin.describe_cluster())["brokers"])
                copies = topic_replication(brokers, replication)
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(
                                name=topic,
                                num_partitions=partitions,
                                replication_factor=copies,
                                topic_configs=topic_configs(topic, replication=copies),
                            )
                            for topic in missing
                        ]
                    )
                log.info(
                    "created topics", extra={"topic": ",".join(missing), "replication": copies}
                )
            older_dlqs = [t for t in wanted if t.endswith(DLQ_SUFFIX) and t in existing]
            if older_dlqs:  # created before dead letters had room for their headers
                # Altering replaces every topic-level setting: keep each one's own replication's.
                described = await admin.describe_topics(older_dlqs)
                await admin.alter_configs(
                    [
                        ConfigResource(
                            ConfigResourceType.TOPIC,
                            topic["topic"],
                            topic_configs(topic["topic"], replication=_copies(topic)),
                        )
                        for topic in described
                        if topic["error_code"] == 0
                    ]
                )
            return
        except (KafkaError, OSError) as error:
            if attempt == attempts:
                raise
            log.warning("kafka not ready for topic creation, retrying", extra={"error": str(error)})
            await asyncio.sleep(min(0.2 * attempt, 2.0))
        finally:
            await admin.close()


def _copies(described_topic: dict[str, Any]) -> int:
    """The replication factor of a topic as metadata describes it."""
    return max((len(p["replicas"]) for p in described_topic["partitions"]), default=1)


async def ensure_service_topics(settings: CommonSettings) -> None:
    """`ensure_topics` with the partitions and replication a service was configured with, once
    Kafka is known not to refuse the service's security settings (`check_access`: a wrong
    password stops the service now, naming the variable, instead of after every retry)."""
    await check_access(settings.kafka)
    await ensure_topics(
        settings.kafka,
        partitions=settings.tierline_topic_partitions,
        replication=settings.tierline_topic_replication,
    )


def dead_letter_headers(
    record: ConsumerRecord[Any, Any], error: BaseException | str, *, by: str | None = None
) -> dict[str, str]:
    """A dead letter's headers: the record's own, then why it failed and where it was (SPEC
    §13); `by` names the service that dead-lettered it (`dead_lettered_by`)."""
    headers = {key: value.decode(errors="replace") for key, value in (record.headers or ())}
    headers.update(
        {
            "error": error_text(error)[:4000],
            "error_type": "contract" if isinstance(error, str) else type(error).__name__,
            "origin_topic": record.topic,
            "origin_partition": str(record.partition),
            "origin_offset": str(record.offset),
            "origin_timestamp": str(record.timestamp),
        }
    )
    if by is not None:
        headers["dead_lettered_by"] = by
    return headers


def error_text(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"


def dead_letter_counter(registry: CollectorRegistry) -> Counter:
    """`tierline_dead_letters{topic}`: the records a service sent to `<topic>.dlq`, by origin
    topic (the one definition every consuming service registers)."""
    return Counter(
        "tierline_dead_letters",
        "Messages sent to a dead-letter topic",
        ["topic"],
        registry=registry,
    )


class Publisher(Protocol):
    """Where a service publishes (topic, key, value) messages: a BatchProducer in production."""

    async def send_many(self, messages: Iterable[tuple[str, bytes, bytes]]) -> int:
        """Publish and wait for every acknowledgement (acks=all); how many were sent."""
        ...


def batch_size_histogram(registry: CollectorRegistry, service: str) -> Histogram:
    """`tierline_<service>_batch_size`: items per batch a hot-path consumer handled (a record
    may carry several)."""
    return Histogram(
        f"tierline_{service}_batch_size",
        "Items per consumed batch",
        registry=registry,
        buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000, 20_000),
    )


async def dead_letter(
    broker: KafkaBroker,
    record: ConsumerRecord[Any, Any],
    error: BaseException | str,
    *,
    by: str | None = None,
) -> None:
    """Send a record that cannot be processed to `<topic>.dlq`, saying why and where it was."""
    headers = dead_letter_headers(record, error, by=by)
    await broker.publish(record.value or b"", dlq(record.topic), key=record.key, headers=headers)
    log.warning(
        "dead-lettered a message",
        extra={**record_fields(record), "error": headers["error"][:500]},
    )


#: Where an item came from: its record, and its index in the record's batch (None when the
#: record is the item itself).
ItemOrigin = tuple[ConsumerRecord[bytes, bytes], int | None]


async def dead_letter_item(
    broker: KafkaBroker, origin: ItemOrigin, error: BaseException | str, *, by: str | None = None
) -> None:
    """Send one item that cannot be processed to `<topic>.dlq`: a whole record when it is the
    item, else the item's own document out of its batch, with its index in `origin_item`."""
    record, index = origin
    if index is None:
        await dead_letter(broker, record, error, by=by)
        return
    headers = dead_letter_headers(record, error, by=by)
    headers["origin_item"] = str(index)
    value = batch_element(record.value or b"", index)
    await broker.publish(value, dlq(record.topic), key=record.key, headers=headers)
    log.warning(
        "dead-lettered an item of a batch",
        extra={**record_fields(record), "item": index, "error": headers["error"][:500]},
    )


async def decode_items(
    broker: KafkaBroker,
    records: Sequence[ConsumerRecord[bytes, bytes]],
    decoder: ItemRecords[Item],
    dead_letters: Counter,
) -> list[tuple[ItemOrigin, Item]]:
    """Every item of the records, in order, each with where it came from. A record that does
    not decode at all goes to `<topic>.dlq` whole; an item of a batch that breaks the contract
    goes there alone, and the other items of its batch are kept."""
    decoded: list[tuple[ItemOrigin, Item]] = []
    for record in records:
        value = record.value or b""
        batch = is_batch(value)  # once: the record's items are indexed only in a batch
        try:
            items = decoder.decode(value)
        except ContractError as error:
            if not batch:
                await _reject(broker, (record, None), str(error), dead_letters)
                continue
            try:
                each = decoder.decode_each(value)
            except ContractError as whole:
                await _reject(broker, (record, None), str(whole), dead_letters)
                continue
            for index, item in enumerate(each):
                if isinstance(item, ContractError):
                    await _reject(broker, (record, index), str(item), dead_letters)
                else:
                    decoded.append(((record, index), item))
            continue
        except Exception as error:  # whatever the bytes are, they must not stop the partition
            await _reject(broker, (record, None), error, dead_letters)
            continue
        if batch:
            decoded += [((record, index), item) for index, item in enumerate(items)]
        else:
            decoded.append(((record, None), items[0]))
    return decoded


async def _reject(
    broker: KafkaBroker, origin: ItemOrigin, error: BaseException | str, dead_letters: Counter
) -> None:
    await dead_letter_item(broker, origin, error)
    dead_letters.labels(topic=origin[0].topic).inc()


class CompactedView(Generic[T]):
    """Every service's own view of a compacted topic (the latest value per key), kept current.

    It reads the topic from the beginning without a consumer group, then follows it. `caught_up`
    waits until the view holds everything written before the call, so a handler never decides
    with an agreement older than one the caller already saw acknowledged.

    A record the view cannot use — `parse` raises, or `key_of` its value is not the record's
    key — never replaces the current value. With `dead_lettered_by` (the service's name) it is
    sent to `<topic>.dlq` with its error and origin, once per service: the view re-reads the
    topic at every start, so at start it reads which origins this service dead-lettered before.
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        parse: Callable[[bytes], T],
        *,
        newer: Callable[[T, T], bool] | None = None,
        key_of: Callable[[T], str] | None = None,
        dead_lettered_by: str | None = None,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._parse = parse
        self._newer = newer
        self._key_of = key_of
        self._dead_lettered_by = dead_lettered_by
        self._values: dict[str, T] = {}
        self._consumer: AIOKafkaConsumer | None = None
        #: A second client just for end offsets: on the follower's connection a ListOffsets
        #: request would queue behind its long-poll fetch (up to fetch_max_wait_ms).
        self._offsets: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        #: (partition, offset) of the records this service already dead-lettered.
        self._dead_lettered: set[tuple[int, int]] = set()
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._positions: dict[TopicPartition, int] = {}
        self.on_change: list[Callable[[str, T], Awaitable[None] | None]] = []
        #: How many records this view refused (dead-lettered now or before), for tests/metrics.
        self.rejected = 0

    def get(self, key: str) -> T | None:
        return self._values.get(key)

    def items(self) -> list[tuple[str, T]]:
        return list(self._values.items())

    async def start(self) -> None:
        if self._dead_lettered_by is not None:
            self._producer = self._kafka.producer(
                client_id=f"tierline-view-dlq-{self._topic}",
                acks="all",
                enable_idempotence=True,
            )
            await self._producer.start()
            self._dead_lettered = await self._read_dead_letters(self._dead_lettered_by)
        self._consumer = self._kafka.consumer(
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"tierline-view-{self._topic}",
        )
        await self._consumer.start()
        self._offsets = self._kafka.consumer(
            enable_auto_commit=False,
            client_id=f"tierline-view-offsets-{self._topic}",
        )
        await self._offsets.start()
        partitions = await partitions_of(self._kafka, self._topic)
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._follow(), name=f"view-{self._topic}")
        await self.caught_up(timeout=60)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._offsets is not None:
            await self._offsets.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            except KafkaError as error:
                log.warning(
                    "view fetch failed, retrying", extra={"topic": self._topic, "error": str(error)}
                )
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    await self._apply(record)
            async with self._progress:
                for partition in self._partitions:
                    self._positions[partition] = await self._consumer.position(partition)
                self._progress.notify_all()

    async def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            key = (record.key or b"").decode()
        except UnicodeDecodeError as error:
            await self._reject(record, f"the record key is not UTF-8: {error}")
            return
        if record.value is None:
            self._values.pop(key, None)
            return
        try:
            value = self._parse(record.value)
        except Exception as error:  # a bad record must not stop the view; it is dead-lettered
            await self._reject(record, error)
            return
        if self._key_of is not None and (named := self._key_of(value)) != key:
            await self._reject(
                record, f"the record key {key!r} differs from the body's client_id {named!r}"
            )
            return
        current = self._values.get(key)
        if current is not None and self._newer is not None and not self._newer(value, current):
            return  # a republished older version must not replace a newer one
        self._values[key] = value
        for callback in self.on_change:
            try:
                result = callback(key, value)
                if result is not None:
                    await result
            except Exception:  # one listener's failure must not stop the view
                log.exception("view change listener failed", extra=record_fields(record))

    async def _reject(
        self, record: ConsumerRecord[bytes, bytes], error: BaseException | str
    ) -> None:
        """Dead-letter a record the view cannot use, unless this service did so before."""
        self.rejected += 1
        reason = error_text(error)
        log.error(
            "unusable record in compacted topic",
            extra={**record_fields(record), "error": reason[:500]},
        )
        if self._producer is None or (record.partition, record.offset) in self._dead_lettered:
            return
        headers = dead_letter_headers(record, error, by=self._dead_lettered_by)
        encoded = [(name, value.encode()) for name, value in headers.items()]
        delay = 0.2
        while True:  # an outage is waited out: the dead letter must not be lost
            try:
                await self._producer.send_and_wait(
                    dlq(self._topic), record.value or b"", key=record.key, headers=encoded
                )
                break
            except KafkaError as failure:
                log.warning(
                    "dead letter not written, retrying",
                    extra={"topic": dlq(self._topic), "error": str(failure)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._dead_lettered.add((record.partition, record.offset))

    async def _read_dead_letters(self, service: str) -> set[tuple[int, int]]:
        """The (partition, offset) of every record of this topic `service` dead-lettered."""
        topic = dlq(self._topic)
        try:
            partitions = [
                TopicPartition(topic, p)
                for p in await partitions_of(self._kafka, topic, attempts=20)
            ]
        except RuntimeError:
            log.warning("no dead-letter topic yet", extra={"topic": topic})
            return set()
        consumer = self._kafka.consumer(
            enable_auto_commit=False,
            client_id=f"tierline-view-dlq-reader-{self._topic}",
        )
        await consumer.start()
        seen: set[tuple[int, int]] = set()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            remaining = {tp for tp, end in ends.items() if end > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        headers = {k: v for k, v in (record.headers or ())}
                        if (
                            headers.get("dead_lettered_by") == service.encode()
                            and headers.get("origin_topic") == self._topic.encode()
                        ):
                            with contextlib.suppress(KeyError, ValueError):
                                seen.add(
                                    (
                                        int(headers["origin_partition"]),
                                        int(headers["origin_offset"]),
                                    )
                                )
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return seen

    async def caught_up(self, timeout: float = 10.0) -> None:
        """Wait until the view has read every record written to the topic before this call."""
        assert self._offsets is not None
        ends = await self._offsets.end_offsets(self._partitions)

        def reached() -> bool:
            return all(self._positions.get(tp, -1) >= end for tp, end in ends.items())

        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(reached), timeout)


async def end_offsets(kafka: KafkaConnection, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in topics for p in await partitions_of(kafka, topic)
        ]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def partitions_of(kafka: KafkaConnection, topic: str, *, attempts: int = 50) -> list[int]:
    """The partition numbers of `topic`, waiting briefly for a just-created topic's metadata."""
    admin = kafka.admin(client_id="tierline-admin")
    await admin.start()
    try:
        for _ in range(attempts):
            described = await admin.describe_topics([topic])
            partitions = [
                p["partition"] for d in described if d["error_code"] == 0 for p in d["partitions"]
            ]
            if partitions:
                return sorted(partitions)
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    raise RuntimeError(f"topic {topic} does not exist")


async def committed_offsets(kafka: KafkaConnection, group_id: str) -> dict[TopicPartition, int]:
    """The offsets a consumer group has committed (what it has fully processed)."""
    admin = kafka.admin(client_id="tierline-admin")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
        return {tp: meta.offset for tp, meta in offsets.items()}
    except GroupCoordinatorNotAvailableError:
        return {}  # no group has committed on this cluster yet
    finally:
        await admin.close()


class BatchProducer:
    """The hot path's producer: many keyed messages per call, framed into per-partition batches.

    FastStream's `publish` costs tens of microseconds per message in middleware and framing;
    here a message costs an append to a record batch. Partitions are chosen exactly as every
    Kafka client chooses them (murmur2 of the key), so a client's messages keep one partition
    and their order. Durability is the same as the broker's: acks=all, idempotence on.

    A refusal the producer cannot recover from (the broker refused a record as too large, say)
    used to wedge it: aiokafka's idempotent producer had already counted the refused batch in
    the partition's sequence numbers, so the broker answered OutOfOrderSequenceNumber to every
    later batch for that partition until a restart. After such a refusal the producer is
    replaced by a fresh one (a new producer id, sequences from 0); only the send that met the
    refusal fails. Timeouts and retriable errors (an outage) keep the producer: it retries.
    """

    def __init__(self, kafka: KafkaConnection, *, client_id: str, linger_ms: int = 5) -> None:
        self._kafka = kafka
        self._options: dict[str, Any] = {
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": 512 * 1024,
            "request_timeout_ms": 15_000,
        }
        self._producer_: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._partition_cache: dict[tuple[str, bytes], int] = {}
        self._replacing = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._producer_ is None:
            raise RuntimeError("BatchProducer.start() was not awaited")
        return self._producer_

    async def start(self) -> None:
        # Built here, not in __init__: aiokafka binds to the running event loop.
        self._producer_ = self._kafka.producer(**self._options)
        await self._producer_.start()

    async def stop(self) -> None:
        if self._producer_ is not None:
            await self._producer_.stop()
        if self._retiring:
            await asyncio.gather(*self._retiring)

    async def _replace(self, broken: AIOKafkaProducer, error: KafkaError) -> None:
        """Swap `broken` for a fresh producer, once however many sends met the same refusal."""
        async with self._replacing:
            if self._producer_ is not broken:
                return  # a concurrent send already replaced it
            log.warning(
                "the producer met a refusal it cannot recover from; replacing it",
                extra={"error": repr(error)},
            )
            fresh = self._kafka.producer(**self._options)
            try:
                await fresh.start()
            except BaseException:  # Kafka is away: the next refusal tries again
                with contextlib.suppress(Exception):
                    await fresh.stop()
                raise
            self._producer_ = fresh
        # The old one finishes (or fails) what other sends gave it, off this request's path.
        task = asyncio.create_task(self._retire(broken), name="retire-producer")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(producer: AIOKafkaProducer) -> None:
        try:
            await producer.stop()
        except Exception as error:  # it was broken already: nothing else to do with it
            log.warning("a replaced producer failed to stop", extra={"error": repr(error)})

    async def _partition_of(self, topic: str, key: bytes) -> int:
        """The key's partition, as every Kafka client picks it (murmur2, which aiokafka computes
        in Python: a few µs, so `send_many` remembers it per key; keys are client ids, few)."""
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        partitions = self._partitions[topic]
        partition: int = self._partitioner(key, partitions, partitions)
        if len(self._partition_cache) >= 100_000:
            self._partition_cache.clear()
        self._partition_cache[(topic, key)] = partition
        return partition

    async def send_many(
        self,
        messages: Iterable[tuple[str, bytes, bytes]],
        *,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> int:
        """Send (topic, key, value) messages; return once Kafka acknowledged every one."""
        producer = self._producer
        try:
            return await self._send_many(producer, messages, headers)
        except KafkaError as error:
            if not error.retriable and not isinstance(error, KafkaTimeoutError | ProducerClosed):
                await self._replace(producer, error)
            raise

    async def _send_many(
        self,
        producer: AIOKafkaProducer,
        messages: Iterable[tuple[str, bytes, bytes]],
        headers: Sequence[tuple[str, bytes]],
    ) -> int:
        batches: dict[tuple[str, int], Any] = {}
        futures: list[Awaitable[Any]] = []
        sent = 0
        cache = self._partition_cache
        record_headers = list(headers)
        for topic, key, value in messages:
            partition = cache.get((topic, key))
            if partition is None:
                partition = await self._partition_of(topic, key)
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=record_headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[(topic, partition)] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=record_headers)
            sent += 1
        for (topic, partition), batch in batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        if futures:
            # Every outcome, not only the first failure: no delivery is left unobserved.
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return sent


async def skip_decoding(message: Any) -> None:
    """A subscriber decoder that decodes nothing: our batch handlers read the raw records
    themselves (each one validated once, with the errors kept for the dead-letter topic), so
    FastStream's own JSON decoding of every body would be wasted work on the hot path."""
    return None


async def parse_raw_batch(
    records: tuple[ConsumerRecord[bytes, bytes], ...],
    parse: Callable[[tuple[ConsumerRecord[bytes, bytes], ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """A hot-path subscriber's parser. FastStream's own builds a headers dict for every record
    of a batch, which our handlers never read (they take the raw records): about 5 % of the
    classifier's and metering's CPU. It parses the first record only, for what FastStream needs
    of a message (its consumer, topic and id), then carries every record: a nack rewinds each
    partition to its earliest record in `raw_message`, so a failed batch is redelivered whole
    (`tests/integration/test_kafka_plumbing.py`), and the bodies keep the size metrics true."""
    message = await parse(records[:1])
    message.raw_message = records
    message.body = [record.value or b"" for record in records]
    return message


#: What a hot-path subscriber calls with each batch of raw records.
BatchHandler = Callable[[Sequence[ConsumerRecord[bytes, bytes]]], Awaitable[object]]


def subscribe_hot_batches(
    broker: KafkaBroker,
    topic: str,
    *,
    group_id: str,
    max_records: int,
    batch_timeout_ms: int,
    handle: BatchHandler,
    title: str,
    description: str,
    lanes: int = 1,
) -> None:
    """Subscribes `handle` to `topic` as a hot-path consumer: batches of up to `max_records`
    raw records (no decoding: `handle` validates each), fetched full (HOT_FETCH_*), from the
    earliest offset for a new group. The offsets commit after `handle` returns; a batch it
    fails is redelivered, never skipped.

    `lanes` consumers of the group run in this process, each with its share of the partitions
    and one batch in flight: while one waits on its database transaction or on Kafka's
    acknowledgements, another decodes its next batch. A partition belongs to one lane at a
    time, so a client's items stay in order, exactly as with as many processes."""
    for lane in range(lanes):

        @broker.subscriber(
            topic,
            group_id=group_id,
            batch=True,
            max_records=max_records,
            batch_timeout_ms=batch_timeout_ms,
            fetch_min_bytes=HOT_FETCH_MIN_BYTES,
            fetch_max_wait_ms=HOT_FETCH_MAX_WAIT_MS,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            parser=parse_raw_batch,
            decoder=skip_decoding,
            title=title if lane == 0 else f"{title}-lane-{lane + 1}",
            description=description,
            include_in_schema=lane == 0,  # one consumer group, documented once
        )
        async def consume(msg: KafkaMessage) -> None:
            await handle(msg.raw_message)
