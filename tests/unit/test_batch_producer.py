"""BatchProducer's recovery, with aiokafka's producer replaced by a fake: a refusal the producer
cannot recover from replaces it (later sends use a fresh one), while an outage (a timeout, a
retriable error) keeps it retrying. The real wedge is reproduced on a broker in
tests/integration/test_batch_producer.py."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
)

from shared.infra import kafka_connection
from shared.infra.kafka import BatchProducer
from shared.infra.kafka_connection import KafkaConnection


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None, headers: Any) -> object:
        self.records.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    built: ClassVar[list[FakeProducer]] = []

    def __init__(self, **options: Any) -> None:
        self.started = self.stopped = False
        self.fail_with: KafkaError | None = None
        self.sent: list[bytes] = []
        FakeProducer.built.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_with is not None:
            delivered.set_exception(self.fail_with)
        else:
            self.sent += batch.records
            delivered.set_result(None)
        return delivered


@pytest.fixture
async def producer(monkeypatch: pytest.MonkeyPatch) -> BatchProducer:
    FakeProducer.built = []
    # Every Kafka client is built by the connection (shared/infra/kafka_connection.py).
    monkeypatch.setattr(kafka_connection, "AIOKafkaProducer", FakeProducer)
    batch_producer = BatchProducer(KafkaConnection.plaintext("127.0.0.1:1"), client_id="test")
    await batch_producer.start()
    return batch_producer


@pytest.mark.parametrize("refusal", [MessageSizeTooLargeError(), OutOfOrderSequenceNumber()])
async def test_after_a_refusal_it_cannot_recover_from_the_producer_is_replaced(
    producer: BatchProducer, refusal: KafkaError
) -> None:
    [first] = FakeProducer.built
    first.fail_with = refusal
    with pytest.raises(type(refusal)):
        await producer.send_many([("t", b"acme", b"big")])
    assert await producer.send_many([("t", b"acme", b"next")]) == 1
    [_, fresh] = FakeProducer.built
    assert fresh.started and fresh.sent == [b"next"]
    await producer.stop()
    assert first.stopped and fresh.stopped


@pytest.mark.parametrize("outage", [KafkaTimeoutError(), KafkaConnectionError()])
async def test_an_outage_keeps_the_producer(producer: BatchProducer, outage: KafkaError) -> None:
    [only] = FakeProducer.built
    only.fail_with = outage
    with pytest.raises(type(outage)):
        await producer.send_many([("t", b"acme", b"v")])
    only.fail_with = None
    assert await producer.send_many([("t", b"acme", b"v")]) == 1
    assert FakeProducer.built == [only] and only.sent == [b"v"]
    await producer.stop()


async def test_concurrent_sends_meeting_one_refusal_replace_it_once(
    producer: BatchProducer,
) -> None:
    [first] = FakeProducer.built
    first.fail_with = MessageSizeTooLargeError()
    outcomes = await asyncio.gather(
        *(producer.send_many([("t", b"acme", b"v")]) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(outcome, MessageSizeTooLargeError) for outcome in outcomes)
    assert len(FakeProducer.built) == 2
    await producer.stop()
