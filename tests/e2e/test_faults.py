"""Nothing lost, nothing counted twice (issue 4), one fault at a time, on real processes.

Each test injects one fault a deployment meets — a replay from offset 0, poison messages, a crash
between a database commit and the publish after it, Kafka going away under intake, SIGTERM —
and checks the counts and invoices are exactly what was sent.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts.topics import METERING_GROUP, WORKITEMS_CLASSIFIED, WORKITEMS_COMPLETED, dlq
from shared.domain.periods import period_bounds
from shared.infra.faults import PAUSE_VARIABLE, PAUSED, RESUMED
from shared.infra.kafka import partitions_of
from shared.infra.kafka_connection import KafkaConnection
from tests.e2e.conftest import Api, invoice_events
from tests.e2e.test_billing_rules import agreement, care
from tests.e2e.test_pipeline import last_month
from tools.localinfra import free_port
from tools.supervisor import ServiceProcess


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    return {"env": {"INTAKE_PUBLISH_TIMEOUT_SECONDS": "3"}, "instances": {}}


def october_items(client: str, prefix: str, count: int) -> list[dict[str, Any]]:
    return care(client, prefix, count, *period_bounds(last_month(), "UTC"))


async def october_client(api: Api, client: str, rates: tuple[str, str], items: int) -> str:
    """`client` with a USD agreement at `rates` and `items` care items last month; its key."""
    await api.put_agreement(agreement(client, "USD", "UTC", rates))
    await api.post_items(october_items(client, "a", items))
    return last_month().key


async def test_replaying_every_topic_from_offset_zero_changes_no_count(
    api: Api, run_id: str
) -> None:
    client = f"replay-{run_id}"
    period = await october_client(api, client, ("1.00", "2.00"), 300)
    await api.close(last_month().previous().key, client)  # only for its barrier
    before = await api.usage(client, period)
    assert before["items"] == 300

    metering = api.stack.processes["metering"]
    metering.stop()
    await rewind_group(
        api.stack.kafka_bootstrap,
        METERING_GROUP,
        [WORKITEMS_CLASSIFIED],
    )
    metering.start()
    metering.wait_healthy()
    await api.close(last_month().previous().key, client)  # waits until the replay is metered
    assert await api.usage(client, period) == before
    duplicates = await metric(api, "metering", "tierline_metering_duplicates_total")
    assert duplicates >= 300  # the replay really happened


async def test_poison_messages_are_dead_lettered_and_their_partition_keeps_flowing(
    api: Api, run_id: str
) -> None:
    client = f"poison-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    producer = AIOKafkaProducer(bootstrap_servers=api.stack.kafka_bootstrap, acks="all")
    await producer.start()
    garbage = f"not json {run_id}".encode()
    breaks_contract = json.dumps({"id": run_id, "client_id": client}).encode()
    try:
        # Same key as the client's items: the same partition, right in their way.
        await producer.send_and_wait(WORKITEMS_COMPLETED, garbage, key=client.encode())
        await producer.send_and_wait(WORKITEMS_CLASSIFIED, breaks_contract, key=client.encode())
    finally:
        await producer.stop()
    await api.post_items(october_items(client, "a", 50))
    closed = await api.close(last_month().key, client)
    assert closed.status_code == 200
    assert closed.json()["invoices"][0]["usage"]["items"] == 50

    dead = await read_all(
        api.stack.kafka_bootstrap, [dlq(WORKITEMS_COMPLETED), dlq(WORKITEMS_CLASSIFIED)]
    )
    mine = {
        r.value: {k: v.decode() for k, v in r.headers}
        for r in dead
        if r.value in (garbage, breaks_contract)
    }
    assert set(mine) == {garbage, breaks_contract}
    assert mine[garbage]["origin_topic"] == WORKITEMS_COMPLETED
    assert mine[breaks_contract]["origin_topic"] == WORKITEMS_CLASSIFIED
    assert "source" in mine[breaks_contract]["error"]  # names the missing field
    assert all(h["origin_offset"].isdigit() for h in mine.values())


async def test_a_crash_between_commit_and_publish_republishes_the_same_invoice(
    api: Api, run_id: str
) -> None:
    client = f"outbox-{run_id}"
    period = await october_client(api, client, ("3.00", "4.00"), 7)
    billing = api.stack.processes["billing"]
    billing.stop()
    env = {
        **billing.env,
        "TIERLINE_CRASH_AT": "billing.after_close_commit",
        "BILLING_AUTO_CLOSE": "false",
    }
    crashing = ServiceProcess("billing", free_port(), env, api.stack.log_dir / "billing-crash.log")
    crashing.start()
    crashing.wait_healthy()
    try:
        with pytest.raises(httpx.TransportError):  # the process dies mid-request
            await api.http.post(
                f"{crashing.url}/v1/periods/{period}/close",
                json={"client_id": client},
                headers=api.admin,
            )
        crashing.process.wait(10)  # type: ignore[union-attr]
        assert crashing.process.returncode == 137  # type: ignore[union-attr]
    finally:
        crashing.kill()
        billing.start()
        billing.wait_healthy()
    [stored] = await api.invoices(client_id=client, period=period)
    invoice_id = f"{client}-{period}-1"
    events = await invoice_events(api.stack.kafka_bootstrap, {invoice_id})
    assert events[invoice_id]["data"] == stored
    copies = [e for e in await all_events(api.stack.kafka_bootstrap) if e["id"] == invoice_id]
    assert copies and all(copy["data"] == stored for copy in copies)


async def test_intake_answers_503_while_kafka_is_down_and_recovers_by_itself(
    api: Api, run_id: str, infra: Any
) -> None:
    client = f"down-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    items = october_items(client, "a", 20)
    infra.kafka.stop()
    try:
        response = await api.http.post(
            f"{api.stack.url('intake')}/v1/work-items", json=items, headers=api.intake
        )
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
    finally:
        infra.kafka.start()
    accepted = None
    for _ in range(60):  # the caller retries, as SPEC §2 says it should
        response = await api.http.post(
            f"{api.stack.url('intake')}/v1/work-items", json=items, headers=api.intake
        )
        if response.status_code == 202:
            accepted = response.json()["accepted"]
            break
        assert response.status_code == 503
        await asyncio.sleep(1)
    assert accepted == 20
    for name in ("classifier", "metering", "billing"):
        api.stack.processes[name].wait_healthy()
    closed = await close_when_ready(api, last_month().key, client)
    assert closed["invoices"][0]["usage"]["items"] == 20


async def test_sigterm_finishes_in_flight_batches_and_a_restart_resumes_exactly(
    api: Api, run_id: str
) -> None:
    """SIGTERM while a batch is certainly in flight: the classifier holds its first batch at a
    pause point (after consuming it, before publishing), says so, and is signalled then. It must
    finish that batch (publish, commit), exit 0, and a restart must count every item once."""
    client = f"term-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    items = october_items(client, "a", 6000)
    classifier = api.stack.processes["classifier"]
    classifier.stop()
    pausing = ServiceProcess(
        "classifier",
        free_port(),
        {**classifier.env, PAUSE_VARIABLE: "classifier.before_publish"},
        api.stack.log_dir / f"classifier-sigterm-{run_id}.log",
    )
    pausing.start()
    pausing.wait_healthy()
    try:
        sending = asyncio.create_task(api.post_items(items, chunk=500))
        await wait_for_line(pausing.log_path, f"{PAUSED} classifier.before_publish")
        pausing.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # Waits on processes run in a thread: the posting goes on meanwhile (a blocked event
        # loop would leave its keep-alive connection idle until intake closed it).
        exited = await asyncio.to_thread(pausing.process.wait, 30)  # type: ignore[union-attr]
        assert exited == 0  # a clean exit
        log = pausing.log_path.read_text()
        assert f"{RESUMED} classifier.before_publish" in log  # the batch finished, not dropped
    finally:
        pausing.kill()
        await asyncio.to_thread(restart, classifier)
    metering = api.stack.processes["metering"]
    metering.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    exited = await asyncio.to_thread(metering.process.wait, 30)  # type: ignore[union-attr]
    assert exited == 0  # under load, too
    await asyncio.to_thread(restart, metering)
    assert await sending == 6000
    closed = await close_when_ready(api, last_month().key, client)
    assert closed["invoices"][0]["usage"]["items"] == 6000


# --- helpers ---------------------------------------------------------------------------------


def restart(service: ServiceProcess) -> None:
    service.start()
    service.wait_healthy()


async def wait_for_line(path: Path, line: str, timeout: float = 60) -> None:
    """Until `line` is in the log at `path` (polled in a thread: the event loop keeps going)."""

    def poll() -> None:
        deadline = time.monotonic() + timeout
        while not (path.exists() and line in path.read_text(errors="replace")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{line!r} never appeared in {path}")
            time.sleep(0.05)

    await asyncio.to_thread(poll)


async def close_when_ready(api: Api, period: str, client: str) -> dict[str, Any]:
    for _ in range(30):
        response = await api.close(period, client)
        if response.status_code == 200:
            result: dict[str, Any] = response.json()
            return result
        await asyncio.sleep(1)
    raise AssertionError(f"close never succeeded: {response.status_code} {response.text}")


async def rewind_group(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit offset 0 on every partition for `group` (its members must be stopped)."""
    partitions = [
        TopicPartition(t, p)
        for t in topics
        for p in await partitions_of(KafkaConnection.plaintext(bootstrap), t)
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        for _ in range(20):
            try:
                await consumer.commit({tp: 0 for tp in partitions})
                return
            except Exception:  # the old members' session may still be expiring
                await asyncio.sleep(1)
        raise AssertionError("could not rewind the group")
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topics: list[str]) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            for part in batch.values():
                records += part
    finally:
        await consumer.stop()
    return records


async def all_events(bootstrap: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await read_all(bootstrap, ["billing.invoices"])]


async def metric(api: Api, service: str, name: str) -> float:
    text = (await api.http.get(f"{api.stack.url(service)}/metrics")).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)
