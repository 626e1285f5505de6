"""Issue 10, points 1 and 6, on the running system: poison records written straight to
`workitems.classified` and `agreements` are dead-lettered by the services themselves, with their
error and origin, while the partition keeps flowing and every close still succeeds."""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from shared.contracts.topics import AGREEMENTS, WORKITEMS_CLASSIFIED, dlq
from shared.domain.periods import period_bounds
from tests.e2e.conftest import Api
from tests.e2e.test_billing_rules import agreement, care
from tests.e2e.test_faults import read_all
from tests.e2e.test_pipeline import last_month
from tests.integration.test_poison_records import classified


def last_month_items(client: str, prefix: str, count: int) -> list[dict[str, Any]]:
    return care(client, prefix, count, *period_bounds(last_month(), "UTC"))


async def test_poison_on_workitems_classified_and_agreements_stalls_nothing(
    api: Api, run_id: str, database_url: str
) -> None:
    client, other, impostor = f"poison-{run_id}", f"bystander-{run_id}", f"impostor-{run_id}"
    for name in (client, other):
        assert (await api.put_agreement(agreement(name, "USD", "UTC", ("1.00", "2.00")))).is_success
    await api.post_items(last_month_items(other, "o", 5))

    in_period = last_month_items(client, "x", 1)[0]["completed_at"]
    poison_items = {
        "nul-in-id": classified(client, f"nul\u0000{run_id}", completed_at=in_period),
        "year-0001": classified(client, f"y1-{run_id}", completed_at="0001-01-01T00:00:00+14:00"),
        "version-3e9": classified(
            client, f"v-{run_id}", completed_at=in_period, agreement_version=3_000_000_000
        ),
        "unknown-line": classified(
            client, f"sl-{run_id}", completed_at=in_period, service_line="gardening"
        ),
    }
    poison = {name: orjson.dumps(item) for name, item in poison_items.items()}
    poison["garbage"] = f"garbage {run_id}".encode()
    # Under the client's key: another client's agreement with a higher version, and garbage.
    wrong_body = {**agreement(impostor, "EUR", "UTC", ("9.00", "9.00")), "version": 99}
    bad_agreements = {
        "key-mismatch": orjson.dumps(wrong_body),
        "garbage": f"not an agreement {run_id}".encode(),
    }
    producer = AIOKafkaProducer(bootstrap_servers=api.stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in bad_agreements.values():
            await producer.send_and_wait(AGREEMENTS, value, key=client.encode())
        # Same key as the client's items: the same partition, right in their way.
        for value in poison.values():
            await producer.send_and_wait(WORKITEMS_CLASSIFIED, value, key=client.encode())
    finally:
        await producer.stop()
    await api.post_items(last_month_items(client, "a", 50))  # sent after the poison

    closed = await api.close(last_month().key, client)
    assert closed.status_code == 200, closed.text
    assert closed.json()["invoices"][0]["usage"]["items"] == 50
    closed_other = await api.close(last_month().key, other)
    assert closed_other.status_code == 200, closed_other.text
    assert closed_other.json()["invoices"][0]["usage"]["items"] == 5

    # The real agreement (version 1) classified the items, never the impostor's version 99.
    conn = await asyncpg.connect(database_url)
    try:
        versions = await conn.fetch(
            "SELECT agreement_version, count(*) FROM metering.items WHERE client_id = $1"
            " GROUP BY 1",
            client,
        )
    finally:
        await conn.close()
    assert [(r[0], r[1]) for r in versions] == [(1, 50)]

    dead = await read_all(api.stack.kafka_bootstrap, [dlq(WORKITEMS_CLASSIFIED)])
    letters = {
        r.value: {k: v.decode() for k, v in r.headers} for r in dead if r.value in poison.values()
    }
    assert set(letters) == set(poison.values())
    for headers in letters.values():
        assert headers["error"] and headers["error_type"]
        assert headers["origin_topic"] == WORKITEMS_CLASSIFIED
        assert headers["origin_partition"].isdigit() and headers["origin_offset"].isdigit()
    assert "gardening" in letters[poison["unknown-line"]]["error"]

    # Each consuming service dead-letters each bad agreements record once, also across a
    # restart (which re-reads the compacted topic from the beginning).
    metering = api.stack.processes["metering"]
    metering.stop()
    metering.start()
    metering.wait_healthy()
    again = await api.close(last_month().key, client)  # the restarted metering is caught up
    assert again.status_code == 200, again.text
    dead_agreements = await read_all(api.stack.kafka_bootstrap, [dlq(AGREEMENTS)])
    by_service = Counter(
        (r.value, dict(r.headers)["dead_lettered_by"].decode())
        for r in dead_agreements
        if r.value in bad_agreements.values()
    )
    assert by_service == {
        (value, service): 1
        for value in bad_agreements.values()
        for service in ("classifier", "metering")
    }
    mismatch = next(
        {k: v.decode() for k, v in r.headers}
        for r in dead_agreements
        if r.value == bad_agreements["key-mismatch"]
    )
    assert mismatch["origin_topic"] == AGREEMENTS
    assert impostor in mismatch["error"] and client in mismatch["error"]
