"""Issue 10 on the running system (real Kafka, PostgreSQL and services): a hostile work item is a
4xx at intake with nothing published, and a record metering could not store, written straight
to Kafka, is dead-lettered naming its field while its partition keeps flowing and the client's
period still closes with every valid item counted."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts.topics import WORKITEMS_CLASSIFIED, WORKITEMS_COMPLETED, dlq
from shared.domain.periods import period_bounds
from tests.e2e.conftest import Api
from tests.e2e.test_billing_rules import agreement, care
from tests.e2e.test_faults import read_all
from tests.e2e.test_pipeline import last_month


def hostile_bodies(client: str) -> list[bytes]:
    start, _ = period_bounds(last_month(), "UTC")
    [valid] = care(client, "hostile", 1, start, start.replace(day=20))
    item = orjson.dumps(valid)
    return [
        orjson.dumps({**valid, "id": "t\x00"}),
        orjson.dumps({**valid, "completed_at": "0001-01-01T00:00:00+14:00"}),
        orjson.dumps({**valid, "completed_at": "2099-12-31T23:00:00-05:00"}),
        orjson.dumps({**valid, "attributes": {"n": 2**53 + 1}}),
        item[:-1] + b', "title": "\\ud800"}',
        item[:-1] + b', "title": "caf\xe9"}',
        b"[" * 10_000,
        orjson.dumps([valid, {**valid, "id": "x" * 129}]),  # one bad item: nothing published
    ]


async def test_hostile_items_are_422_and_publish_nothing(api: Api, run_id: str) -> None:
    client = f"hostile-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    for body in hostile_bodies(client):
        response = await api.http.post(
            f"{api.stack.url('intake')}/v1/work-items",
            content=body,
            headers={**api.intake, "content-type": "application/json"},
        )
        assert response.status_code == 422, (body[:80], response.text)
        assert response.json()["errors"][0]["msg"]
    start, end = period_bounds(last_month(), "UTC")
    assert await api.post_items(care(client, "ok", 5, start, end)) == 5
    closed = await api.close(last_month().key, client)
    assert closed.status_code == 200, closed.text
    assert closed.json()["invoices"][0]["usage"]["items"] == 5


def record(client: str, **changes: object) -> dict[str, object]:
    start, _ = period_bounds(last_month(), "UTC")
    return {
        "id": "poison",
        "client_id": client,
        "source": "jira",
        "completed_at": start.isoformat(),
        "received_at": start.isoformat(),
        "key_source": "jira",
        "service_line": "customer_support",
        "complexity": "basic",
        "rule_id": "default",
        "agreement_version": 1,
        **changes,
    }


@pytest.mark.parametrize(
    ("topic", "changes", "field"),
    [
        (WORKITEMS_COMPLETED, {"id": "t\x00"}, "id"),
        (WORKITEMS_CLASSIFIED, {"id": "t\x00"}, "id"),
        (WORKITEMS_CLASSIFIED, {"completed_at": "0001-01-01T00:00:00+14:00"}, "completed_at"),
        (WORKITEMS_CLASSIFIED, {"agreement_version": 3_000_000_000}, "agreement_version"),
        (WORKITEMS_CLASSIFIED, {"service_line": "astrology"}, "service_line"),
        (WORKITEMS_CLASSIFIED, {"attributes": {"k": "\x00"}}, "attributes"),
    ],
)
async def test_a_record_metering_could_not_store_is_dead_lettered_and_the_period_closes(
    api: Api, run_id: str, topic: str, changes: dict[str, object], field: str
) -> None:
    client = f"poison-{field.replace('_', '-')}-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    poison = record(client, **{"id": f"poison-{run_id}", **changes})
    if topic == WORKITEMS_COMPLETED:
        for outcome in ("service_line", "complexity", "rule_id", "agreement_version"):
            poison.pop(outcome)
    value = orjson.dumps(poison)
    producer = AIOKafkaProducer(bootstrap_servers=api.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:  # the client's key: the same partition as its items, right in their way
        await producer.send_and_wait(topic, value, key=client.encode())
    finally:
        await producer.stop()
    start, end = period_bounds(last_month(), "UTC")
    assert await api.post_items(care(client, "ok", 20, start, end)) == 20
    closed = await api.close(last_month().key, client)
    assert closed.status_code == 200, closed.text
    assert closed.json()["invoices"][0]["usage"]["items"] == 20

    dead = [r for r in await read_all(api.stack.kafka_bootstrap, [dlq(topic)]) if r.value == value]
    [letter] = dead
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["origin_topic"] == topic
    assert field in headers["error"]
