"""Metering's batch handler on FastStream's in-memory broker (TestKafkaBroker): what it admits,
what it dead-letters and how it isolates a record the database refuses.

The counting transaction is replaced by an in-memory ledger that counts each (client_id, id)
once, as the real one does (tests/integration/test_metering_handlers.py runs the real one on
PostgreSQL and Kafka): the handler decides what reaches it, in which batches, and what becomes
of a record that cannot be counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import orjson
import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.metering.alerts import AlertDecision
from services.metering.counting import MeteredItem
from services.metering.handlers import Meter, Metered, MeteringMetrics
from shared.contracts.topics import METERING_GROUP, WORKITEMS_CLASSIFIED
from shared.domain.agreement.agreement import parse_agreement
from tests.records import classified_record
from tests.spec_example import spec_agreement
from tests.unit.batch_harness import BatchHarness, handling

ACME = parse_agreement(spec_agreement("acme")).with_version(1)


def classified(item_id: str, *, client: str = "acme", **fields: Any) -> bytes:
    return orjson.dumps(classified_record(item_id, client=client, **fields))


class NoDatabase:
    """Any use fails the test: the in-memory ledger below stands in for the transaction."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


class InMemoryMeter(Meter):
    """The real handler, its counting transaction replaced by a set of counted keys. An item
    whose id is in `refused` makes any transaction holding it fail as PostgreSQL would fail it
    on its data (an invalid value)."""

    def __init__(self, broker: KafkaBroker, registry: CollectorRegistry) -> None:
        super().__init__(
            broker, cast(asyncpg.Pool, NoDatabase()), {"acme": ACME}, MeteringMetrics(registry)
        )
        self.alerts_pending = False  # no outbox here: nothing was ever recorded
        self.counted: set[tuple[str, str]] = set()
        self.transactions: list[list[str]] = []
        self.refused: set[str] = set()

    async def meter(self, batch: list[MeteredItem]) -> Metered:
        self.transactions.append([item.item_id for item in batch])
        bad = [item.item_id for item in batch if item.item_id in self.refused]
        if bad:
            raise asyncpg.exceptions.InvalidTextRepresentationError(f"refused {bad[0]}")
        new = [item for item in batch if (item.client_id, item.item_id) not in self.counted]
        self.counted |= {(item.client_id, item.item_id) for item in new}
        return Metered(counted=new, alerts=AlertDecision(alerts=[], usage=[], failures=[]))


@dataclass(kw_only=True)
class Harness(BatchHarness):
    """Metering's handler on workitems.classified, counting in memory."""

    meter: InMemoryMeter

    def dead(self) -> list[tuple[str, str]]:
        """(item id or raw value, error type) of each dead letter, in order."""
        found = []
        for record in self.dead_letters:
            headers = {key: value.decode() for key, value in record.headers}
            assert headers["origin_topic"] == WORKITEMS_CLASSIFIED
            try:
                what = orjson.loads(record.value)["id"]
            except Exception:
                what = record.value.decode(errors="replace")
            found.append((what, headers["error_type"]))
        return found


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    broker = KafkaBroker()
    registry = CollectorRegistry()
    meter = InMemoryMeter(broker, registry)
    found = Harness(broker=broker, topic=WORKITEMS_CLASSIFIED, registry=registry, meter=meter)
    async with handling(
        found, group_id=METERING_GROUP, handle=meter.handle, title="meter"
    ) as running:
        yield running


async def test_a_batch_is_counted_once_and_its_redelivery_adds_nothing(harness: Harness) -> None:
    batch = (classified("t-1"), classified("t-2", service_line="it_support"), classified("t-3"))
    await harness.send(*batch)
    assert harness.meter.transactions == [["t-1", "t-2", "t-3"]]  # one transaction per batch
    assert harness.metric("tierline_metering_items_total", service_line="customer_support") == 2
    assert harness.metric("tierline_metering_items_total", service_line="it_support") == 1
    await harness.send(*batch)  # redelivered after a crash before the offsets committed
    assert harness.metric("tierline_metering_items_total", service_line="customer_support") == 2
    assert harness.metric("tierline_metering_duplicates_total") == 3
    assert harness.dead_letters == []


async def test_records_that_break_the_contract_are_dead_lettered_before_anything_is_counted(
    harness: Harness,
) -> None:
    await harness.send(
        b"\xff not json",
        classified("t-1"),
        classified("t-2", service_line="astrology"),
        classified("t-3", complexity="basic", service_line=None),
        classified("t-4", completed_at="1999-12-31T23:00:00+00:00"),
        classified("t-5"),
    )
    assert harness.meter.transactions == [["t-1", "t-5"]]
    assert harness.dead() == [
        ("\ufffd not json", "contract"),
        ("t-2", "contract"),
        ("t-3", "contract"),
        ("t-4", "contract"),
    ]
    assert harness.metric("tierline_dead_letters_total", topic=WORKITEMS_CLASSIFIED) == 4


async def test_a_record_the_database_refuses_is_isolated_and_dead_lettered_alone(
    harness: Harness,
) -> None:
    harness.meter.refused = {"t-3"}
    await harness.send(*(classified(f"t-{n}") for n in range(1, 6)))
    assert harness.dead() == [("t-3", "InvalidTextRepresentationError")]
    # Everything else is counted, each half in its own transaction, in batch order.
    assert sorted(item_id for _, item_id in harness.meter.counted) == ["t-1", "t-2", "t-4", "t-5"]
    assert harness.meter.transactions[0] == ["t-1", "t-2", "t-3", "t-4", "t-5"]
    assert [t for t in harness.meter.transactions if len(t) == 1] == [["t-3"]]
    assert harness.metric("tierline_metering_items_total", service_line="customer_support") == 4


async def test_a_failure_that_is_not_the_data_s_fails_the_batch_for_redelivery(
    harness: Harness,
) -> None:
    async def broken(batch: list[MeteredItem]) -> Metered:
        raise RuntimeError("a bug, not bad data")

    harness.meter.meter = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug"):
        await harness.send(classified("t-1"), classified("t-2"))
    assert harness.dead_letters == []  # never the records' fault: nothing is dead-lettered
    assert harness.metric("tierline_metering_items_total", service_line="customer_support") == 0
