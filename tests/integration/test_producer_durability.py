"""Every Kafka producer the services run waits for acks=all and is idempotent (issue 14).

With three copies and min.insync.replicas 2, a record is safe from one broker's death only if
its producer waits for every in-sync copy (acks=all) and a send retried after a dropped
connection cannot write the record twice (idempotence). Each producer is started against the
real broker as its service starts it, and the settings read back from the aiokafka producer it
built. An inventory of the code keeps "each producer" honest: a new place that builds a
producer fails `test_every_producer_is_checked` until it is checked here.
"""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.console.deadletters import DeadLetterLog
from shared.infra.agreement_view import agreement_view
from shared.infra.kafka import BatchProducer, ensure_topics, make_broker
from shared.infra.kafka_connection import KafkaConnection
from tools.localinfra import REPO_ROOT

#: Every construction of a Kafka producer in product code: (file, enclosing function).
PRODUCER_SITES = {
    # Every service's FastStream broker: dead letters, billing's outbox (invoices,
    # agreements), metering's alerts.
    ("shared/infra/kafka.py", "make_broker"),
    # The agreements view's dead letters (classifier, metering).
    ("shared/infra/kafka.py", "CompactedView.start"),
    # Intake's and the classifier's records; a replacement after a refusal has the same options.
    ("shared/infra/kafka.py", "BatchProducer.start"),
    ("shared/infra/kafka.py", "BatchProducer._replace"),
    # The console's redrive.
    ("services/console/deadletters.py", "DeadLetterLog.start"),
    # Only describes the topics (AsyncAPI): never connects, never sends.
    ("shared/contracts/asyncapi.py", "system_document"),
    # Where every one of the above is built, with the connection's address and security; the
    # durability options are the callers' (checked below, one test per caller).
    ("shared/infra/kafka_connection.py", "KafkaConnection.producer"),
    ("shared/infra/kafka_connection.py", "KafkaConnection.broker"),
}


_CONSTRUCTORS = {"AIOKafkaProducer", "KafkaBroker"}
_REQUESTS = {"producer", "broker"}


def producer_sites() -> set[tuple[str, str]]:
    """(file, Class.function) of every call to `AIOKafkaProducer(...)` or `KafkaBroker(...)`
    (only `KafkaConnection` builds them, `tests/unit/test_kafka_clients.py`) and of every
    `<connection>.producer(...)` or `.broker(...)` that asks it for one, in services/ and
    shared/."""
    found: set[tuple[str, str]] = set()

    def visit(node: ast.AST, file: str, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, file, f"{scope}.{child.name}" if scope else child.name)
                continue
            if isinstance(child, ast.Call) and (
                (isinstance(child.func, ast.Name) and child.func.id in _CONSTRUCTORS)
                or (isinstance(child.func, ast.Attribute) and child.func.attr in _REQUESTS)
            ):
                found.add((file, scope))
            visit(child, file, scope)

    for path in [*REPO_ROOT.glob("services/**/*.py"), *REPO_ROOT.glob("shared/**/*.py")]:
        visit(ast.parse(path.read_text()), str(path.relative_to(REPO_ROOT)), "")
    return found


def test_every_producer_is_checked() -> None:
    assert producer_sites() == PRODUCER_SITES


#: A started producer, and how to stop it.
Started = tuple[AIOKafkaProducer, Callable[[], Awaitable[Any]]]


def durability(producer: AIOKafkaProducer) -> tuple[int, bool]:
    """(acks, idempotent) as the started aiokafka producer applies them (-1 is acks=all)."""
    return producer._sender._acks, producer._txn_manager is not None


async def fast_stream(
    kafka: KafkaConnection,
) -> Started:
    broker = make_broker(kafka, client_id="durability-test")
    await broker.start()
    fast_producer: Any = broker.config.broker_config.producer  # FastStream's wrapper
    producer: AIOKafkaProducer = fast_producer._producer.producer
    return producer, broker.stop


async def batch_producer(
    kafka: KafkaConnection,
) -> Started:
    batches = BatchProducer(kafka, client_id="durability-test")
    await batches.start()
    return batches._producer, batches.stop


async def view_dead_letters(
    kafka: KafkaConnection,
) -> Started:
    view = agreement_view(kafka, service="durability-test")
    await view.start()
    assert view._producer is not None
    return view._producer, view.stop


async def console_redrive(
    kafka: KafkaConnection,
) -> Started:
    log = DeadLetterLog(kafka)
    await log.start()
    assert log._producer is not None
    return log._producer, log.stop


@pytest.fixture
async def topics(kafka: KafkaConnection) -> AsyncIterator[KafkaConnection]:
    await ensure_topics(kafka, partitions=6)
    yield kafka


@pytest.mark.parametrize(
    "start",
    [fast_stream, batch_producer, view_dead_letters, console_redrive],
    ids=lambda f: f.__name__,
)
async def test_the_producer_waits_for_all_copies_and_is_idempotent(
    topics: KafkaConnection,
    start: Callable[
        [KafkaConnection], Awaitable[tuple[AIOKafkaProducer, Callable[[], Awaitable[Any]]]]
    ],
) -> None:
    producer, stop = await start(topics)
    try:
        assert durability(producer) == (-1, True)
    finally:
        await stop()
