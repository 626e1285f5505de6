"""The classifier's batch handler on FastStream's in-memory broker (TestKafkaBroker): each item is
published with its class, the rule that placed it and the agreement version; an item no rule
places goes to `workitems.unclassified` too; a record that cannot be classified is dead-lettered
alone with its error and origin; a Kafka failure fails the batch so it is redelivered.

Kafka and the agreements are replaced: the classified stream by a recorder (the production
publisher is a BatchProducer, not the broker), the agreement view by a dict. The real broker
path is in tests/integration/test_poison_records.py and tests/e2e."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaTimeoutError
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.classifier import handlers
from services.classifier.handlers import Classifier, ClassifierMetrics
from shared.contracts.topics import (
    CLASSIFIER_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
    WORKITEMS_UNCLASSIFIED,
)
from shared.contracts.workitems import CLASSIFIED_RECORDS, ClassifiedWorkItem
from shared.domain.agreement.agreement import Agreement, parse_agreement
from tests.records import completed_record
from tests.spec_example import spec_agreement
from tests.unit.batch_harness import BatchHarness, handling

ACME = parse_agreement(spec_agreement("acme")).with_version(4)


def completed(item_id: str, *, client: str = "acme", **fields: Any) -> bytes:
    return orjson.dumps(completed_record(item_id, client=client, **fields))


def batch(*documents: bytes) -> bytes:
    """A batch record: item documents as one JSON array (what intake writes)."""
    return b"[" + b",".join(documents) + b"]"


class Agreements:
    """The agreement view: a dict, and a count of the catch-up checks the handler made."""

    def __init__(self, agreements: dict[str, Agreement]) -> None:
        self.agreements = agreements
        self.catch_ups = 0

    def get(self, client_id: str, /) -> Agreement | None:
        return self.agreements.get(client_id)

    async def caught_up(self) -> None:
        self.catch_ups += 1


class Recorder:
    """The classified stream: what was published, or a Kafka failure."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.fail = False

    async def send_many(self, messages: Iterable[tuple[str, bytes, bytes]]) -> int:
        batch = list(messages)
        if self.fail:
            raise KafkaTimeoutError()
        self.messages += batch
        return len(batch)

    def on(self, topic: str) -> list[tuple[bytes, bytes]]:
        return [(key, value) for t, key, value in self.messages if t == topic]

    def items(self, topic: str) -> list[ClassifiedWorkItem]:
        """Every item published to `topic`, out of its record (one item or a batch)."""
        return [item for _, value in self.on(topic) for item in CLASSIFIED_RECORDS.decode(value)]


@dataclass(kw_only=True)
class Harness(BatchHarness):
    """The classifier on workitems.completed, its stream recorded, its agreements a dict."""

    published: Recorder
    agreements: Agreements


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    broker = KafkaBroker()
    registry = CollectorRegistry()
    agreements = Agreements({"acme": ACME})
    published = Recorder()
    classifier = Classifier(
        broker=broker,
        producer=published,
        agreements=agreements,
        metrics=ClassifierMetrics(registry),
    )
    found = Harness(
        broker=broker,
        topic=WORKITEMS_COMPLETED,
        registry=registry,
        published=published,
        agreements=agreements,
    )
    async with handling(
        found, group_id=CLASSIFIER_GROUP, handle=classifier.handle, title="classify"
    ) as running:
        yield running


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


async def test_each_item_is_published_with_its_class_rule_and_agreement_version(
    harness: Harness,
) -> None:
    await harness.send(
        completed("t-1", queue="Customer Care"), completed("t-2", queue="IT Desk", units=3)
    )
    published = harness.published.items(WORKITEMS_CLASSIFIED)
    assert [(i.id, i.service_line, i.complexity, i.rule_id) for i in published] == [
        ("t-1", "customer_support", "basic", "cs"),
        ("t-2", "it_support", "complex", "desk"),
    ]
    assert {i.agreement_version for i in published} == {4}
    assert published[1].units == 3  # the item itself travels on unchanged
    assert {key for key, _ in harness.published.on(WORKITEMS_CLASSIFIED)} == {b"acme"}
    assert harness.published.on(WORKITEMS_UNCLASSIFIED) == []
    assert harness.agreements.catch_ups == 1  # never classified on an agreement older than acked
    assert harness.metric("tierline_classifier_items_total", outcome="classified") == 2
    assert harness.dead_letters == []


async def test_an_item_no_rule_places_goes_to_the_unclassified_topic_too(harness: Harness) -> None:
    await harness.send(completed("t-1", queue="Somewhere else"), completed("t-2", client="nobody"))
    classified = harness.published.items(WORKITEMS_CLASSIFIED)
    unclassified = harness.published.items(WORKITEMS_UNCLASSIFIED)
    # acme's rules place nothing outside their queues (and it has no default); a client
    # without an agreement is placed by the built-in rules, under no agreement version.
    assert [(i.id, i.service_line, i.rule_id, i.agreement_version) for i in classified] == [
        ("t-1", None, None, 4),
        ("t-2", "customer_support", "builtin:customer_support", None),
    ]
    assert [i.id for i in unclassified] == ["t-1"]
    assert harness.metric("tierline_classifier_items_total", outcome="unclassified") == 1
    assert harness.metric("tierline_classifier_items_total", outcome="classified") == 1


async def test_a_record_that_does_not_decode_is_dead_lettered_alone(harness: Harness) -> None:
    await harness.send(
        b"{not json", completed("t-1"), orjson.dumps({"id": "t-2"}), completed("t-3")
    )
    published = [i.id for i in harness.published.items(WORKITEMS_CLASSIFIED)]
    assert published == ["t-1", "t-3"]
    assert [record.value for record in harness.dead_letters] == [
        b"{not json",
        orjson.dumps({"id": "t-2"}),
    ]
    for record in harness.dead_letters:
        headers = headers_of(record)
        assert headers["origin_topic"] == WORKITEMS_COMPLETED
        assert headers["error"] and headers["error_type"] == "contract"
    assert harness.metric("tierline_dead_letters_total", topic=WORKITEMS_COMPLETED) == 2
    assert harness.metric("tierline_classifier_items_total", outcome="classified") == 2


async def test_a_client_s_items_go_on_as_one_batch_record_each_in_order(harness: Harness) -> None:
    await harness.send(
        batch(completed("t-1"), completed("t-2", client="beta")),
        completed("t-3"),
        batch(completed("t-4", client="beta"), completed("t-5")),
    )
    records = harness.published.on(WORKITEMS_CLASSIFIED)
    assert sorted(
        (key, [i.id for i in CLASSIFIED_RECORDS.decode(value)]) for key, value in records
    ) == [(b"acme", ["t-1", "t-3", "t-5"]), (b"beta", ["t-2", "t-4"])]
    assert all(value.startswith(b"[") for _, value in records)  # one record, several items
    assert harness.metric("tierline_classifier_batch_size_sum") == 5  # items, not records
    assert harness.dead_letters == []


async def test_an_item_of_a_batch_that_breaks_the_contract_is_dead_lettered_alone(
    harness: Harness,
) -> None:
    bad = orjson.dumps({**orjson.loads(completed("t-2")), "units": 0})
    await harness.send(batch(completed("t-1"), bad, completed("t-3")))
    assert [i.id for i in harness.published.items(WORKITEMS_CLASSIFIED)] == ["t-1", "t-3"]
    (dead,) = harness.dead_letters
    assert dead.value == bad  # the item's own document, byte for byte, not its batch
    headers = headers_of(dead)
    assert headers["origin_item"] == "1"
    assert headers["origin_topic"] == WORKITEMS_COMPLETED
    assert "units" in headers["error"] and headers["error_type"] == "contract"
    assert harness.metric("tierline_dead_letters_total", topic=WORKITEMS_COMPLETED) == 1


async def test_a_batch_record_that_is_no_array_of_objects_is_dead_lettered_whole(
    harness: Harness,
) -> None:
    await harness.send(b"[" + completed("t-1") + b",", completed("t-2"))
    assert [i.id for i in harness.published.items(WORKITEMS_CLASSIFIED)] == ["t-2"]
    (dead,) = harness.dead_letters
    assert dead.value == b"[" + completed("t-1") + b","
    assert "origin_item" not in headers_of(dead)


async def test_a_later_copy_in_the_same_batch_is_dropped(harness: Harness) -> None:
    await harness.send(completed("t-1"), completed("t-1", queue="IT Desk"), completed("t-2"))
    published = harness.published.items(WORKITEMS_CLASSIFIED)
    assert [(i.id, i.rule_id) for i in published] == [("t-1", "cs"), ("t-2", "cs")]
    assert harness.metric("tierline_classifier_items_total", outcome="duplicate") == 1


async def test_an_item_whose_classified_copy_is_too_large_is_dead_lettered(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "MAX_RECORD_BYTES", 400)
    await harness.send(completed("t-1"), completed("t-2", title="x" * 400))
    published = [i.id for i in harness.published.items(WORKITEMS_CLASSIFIED)]
    assert published == ["t-1"]
    (dead,) = harness.dead_letters
    assert orjson.loads(dead.value)["id"] == "t-2"
    assert headers_of(dead)["error_type"] == "RecordTooLarge"
    assert harness.metric("tierline_classifier_items_total", outcome="dead_lettered") == 1


async def test_a_kafka_failure_fails_the_batch_so_it_is_redelivered(harness: Harness) -> None:
    harness.published.fail = True
    with pytest.raises(KafkaTimeoutError):
        await harness.send(completed("t-1"))
    assert harness.dead_letters == []  # an outage is never the record's fault
    assert harness.metric("tierline_classifier_items_total", outcome="classified") == 0
    harness.published.fail = False
    await harness.send(completed("t-1"))  # the redelivery
    assert [i.id for i in harness.published.items(WORKITEMS_CLASSIFIED)] == ["t-1"]
