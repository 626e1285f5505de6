"""Dead letters are not a dead end (SPEC §12): redriven once the cause is fixed, counted once.

The cause is simulated honestly: the dead letters here are valid work items that a consumer with
a bug (since fixed) gave up on. They are written to the `.dlq` topic as
`shared.infra.kafka.dead_letter` writes them — the original key and value, with `error`,
`error_type` and `origin_*` headers — so the running services are the fixed ones, and redriving
must get each item counted exactly once, however many times it is redriven.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts.topics import WORKITEMS_CLASSIFIED, WORKITEMS_COMPLETED, dlq
from shared.contracts.workitems import CompletedWorkItem, encode_record, with_outcome
from shared.domain.periods import Period, period_bounds
from tests.e2e.conftest import Api
from tests.e2e.test_billing_rules import agreement, care
from tests.e2e.test_faults import close_when_ready, read_all
from tests.e2e.test_pipeline import last_month
from tools.localinfra import free_port
from tools.supervisor import REPO_ROOT, ServiceProcess


def lost_items(client: str, prefix: str, count: int, period: Period) -> list[CompletedWorkItem]:
    """Valid items as intake publishes them to workitems.completed."""
    start, end = period_bounds(period, "UTC")
    step = (end - start) / (count + 1)
    return [
        CompletedWorkItem(
            id=f"{prefix}-{n}",
            client_id=client,
            source="jira",
            completed_at=start + step * (n + 1),
            received_at=datetime.now(UTC),
            key_source="jira",
            queue="Care",
        )
        for n in range(count)
    ]


async def write_dead_letters(
    bootstrap: str, origin_topic: str, values: list[tuple[bytes, bytes]], *, error: str, base: int
) -> list[tuple[int, int]]:
    """Write (key, value) dead letters of `origin_topic` as `dead_letter` does; their positions.
    The origin offsets (`base` + n) stand for where the old consumer read them: unique per test,
    so the records of two tests are never one origin record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    positions = []
    try:
        for n, (key, value) in enumerate(values):
            headers = [
                ("error", error.encode()),
                ("error_type", b"RuntimeError"),
                ("origin_topic", origin_topic.encode()),
                ("origin_partition", b"0"),
                ("origin_offset", str(base + n).encode()),
                ("origin_timestamp", b"1764000000000"),
            ]
            sent = await producer.send_and_wait(dlq(origin_topic), value, key=key, headers=headers)
            positions.append((sent.partition, sent.offset))
    finally:
        await producer.stop()
    return positions


async def metered(api: Api, client: str, period: Period) -> int:
    """The client's items in `period` once everything accepted so far is metered (closing an
    earlier period runs the completeness barrier)."""
    await close_when_ready(api, period.previous().key, client)
    items: int = (await api.usage(client, period.key))["items"]
    return items


async def test_an_item_dead_lettered_for_a_fixed_cause_is_redriven_and_counted_once(
    api: Api, run_id: str
) -> None:
    client = f"redrive-{run_id}"
    period = last_month()
    console = api.stack.url("console")
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    await api.post_items(care(client, "ok", 5, *period_bounds(period, "UTC")))
    error = f"RuntimeError: classifier bug {run_id}, fixed in the next release"
    lost = lost_items(client, "lost", 3, period)
    positions = await write_dead_letters(
        api.stack.kafka_bootstrap,
        WORKITEMS_COMPLETED,
        [(client.encode(), encode_record(item)) for item in lost],
        error=error,
        base=10**12 + int(run_id, 16),
    )
    assert await metered(api, client, period) == 5

    listed = await api.http.get(
        f"{console}/v1/dead-letters/{WORKITEMS_COMPLETED}",
        params={"error_contains": run_id},
        headers=api.admin,
    )
    assert listed.status_code == 200, listed.text
    entries = listed.json()["entries"]
    assert [(e["partition"], e["offset"]) for e in entries] == sorted(positions)
    assert all(e["error"] == error and e["redriven"] is None for e in entries)
    assert all(e["origin"]["topic"] == WORKITEMS_COMPLETED for e in entries)

    partition, offset = positions[0]
    shown = await api.http.get(
        f"{console}/v1/dead-letters/{dlq(WORKITEMS_COMPLETED)}/{partition}/{offset}",
        headers=api.admin,
    )
    assert shown.status_code == 200, shown.text
    assert shown.json()["value_preview"] == encode_record(lost[0]).decode()
    assert shown.json()["headers"]["error"] == error

    chosen = [{"partition": p, "offset": o} for p, o in positions]
    redrive = f"{console}/v1/dead-letters/{WORKITEMS_COMPLETED}/redrive"
    first = await api.http.post(redrive, json={"records": chosen}, headers=api.admin)
    assert first.status_code == 200, first.text
    assert (first.json()["redriven"], first.json()["skipped"], first.json()["failed"]) == (3, 0, 0)
    assert await metered(api, client, period) == 8  # the three lost items, once each

    again = await api.http.post(
        redrive, json={"all": True, "error_contains": run_id}, headers=api.admin
    )
    assert again.status_code == 200, again.text
    answer = again.json()
    assert (answer["chosen"], answer["redriven"], answer["skipped"]) == (3, 0, 3)
    assert all("already redriven" in r["reason"] for r in answer["results"])
    assert await metered(api, client, period) == 8  # still once each

    # The copies went to workitems.completed, saying where they came from.
    landed = [r["published"] for r in first.json()["results"]]
    copies = await read_at(api.stack.kafka_bootstrap, WORKITEMS_COMPLETED, landed)
    assert sorted(c.value for c in copies) == sorted(encode_record(item) for item in lost)
    marks = {dict(c.headers)["redriven_from"].decode() for c in copies}
    assert marks == {f"{dlq(WORKITEMS_COMPLETED)}/{p}/{o}" for p, o in positions}

    relisted = await api.http.get(
        f"{console}/v1/dead-letters/{dlq(WORKITEMS_COMPLETED)}",
        params={"error_contains": run_id, "redriven": "true"},
        headers=api.admin,
    )
    assert len(relisted.json()["entries"]) == 3
    assert all(e["redriven"]["by"].startswith("admin:") for e in relisted.json()["entries"])


async def test_the_cli_lists_shows_and_redrives_with_a_progress_bar(api: Api, run_id: str) -> None:
    client = f"redrive-cli-{run_id}"
    period = last_month()
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    # Classified items metering gave up on: a redrive sends them straight back to metering.
    classified = [
        with_outcome(
            item,
            service_line="customer_support",
            complexity="basic",
            rule_id="care",
            agreement_version=1,
        )
        for item in lost_items(client, "cli", 250, period)
    ]
    positions = await write_dead_letters(
        api.stack.kafka_bootstrap,
        WORKITEMS_CLASSIFIED,
        [(client.encode(), encode_record(item)) for item in classified],
        error=f"RuntimeError: metering bug {run_id}",
        base=2 * 10**12 + int(run_id, 16),
    )

    listed = await tierline_dlq(api, "list", WORKITEMS_CLASSIFIED, "--error-contains", run_id)
    assert listed.code == 0, listed.err
    assert "POSITION" in listed.out and "REDRIVEN" in listed.out
    assert len([line for line in listed.out.splitlines() if run_id in line]) == 50  # --limit
    assert "more: --cursor" in listed.out

    partition, offset = positions[0]
    shown = await tierline_dlq(api, "show", dlq(WORKITEMS_CLASSIFIED), f"{partition}:{offset}")
    assert shown.code == 0, shown.err
    assert f"origin      {WORKITEMS_CLASSIFIED}" in shown.out
    assert classified[0].id in shown.out and "redriven    no" in shown.out

    trial = await tierline_dlq(
        api, "redrive", WORKITEMS_CLASSIFIED, "--all", "--error-contains", run_id, "--dry-run"
    )
    assert trial.code == 0, trial.err
    assert trial.out.startswith("would redrive 250, skipped 0 (already redriven), failed 0")
    assert await metered(api, client, period) == 0

    done = await tierline_dlq(
        api, "redrive", WORKITEMS_CLASSIFIED, "--all", "--error-contains", run_id
    )
    assert done.code == 0, done.err
    assert done.out.startswith("redriven 250, skipped 0 (already redriven), failed 0, of 250")
    bars = [line for line in done.err.splitlines() if line.startswith("redrive [")]
    assert [bar.split()[2] for bar in bars] == ["0/250", "100/250", "200/250", "250/250"]
    assert bars[-1].endswith("100%")
    assert await metered(api, client, period) == 250

    p, o = positions[7]
    repeat = await tierline_dlq(
        api, "redrive", WORKITEMS_CLASSIFIED, "--offset", f"{p}:{o}", "--offset", f"{p}:{o}"
    )
    assert repeat.code == 0, repeat.err
    assert repeat.out.startswith("redriven 0, skipped 1 (already redriven), failed 0, of 1")
    assert await metered(api, client, period) == 250

    refused = await tierline_dlq(api, "list", "billing.invoices")
    assert refused.code == 2
    assert "404" in refused.err and "billing.invoices" in refused.err


async def test_a_crash_between_publish_and_record_republishes_once_and_counts_once(
    api: Api, run_id: str
) -> None:
    client = f"redrive-crash-{run_id}"
    period = last_month()
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00")))
    lost = lost_items(client, "crash", 4, period)
    positions = await write_dead_letters(
        api.stack.kafka_bootstrap,
        WORKITEMS_COMPLETED,
        [(client.encode(), encode_record(item)) for item in lost],
        error=f"RuntimeError: classifier bug {run_id}",
        base=3 * 10**12 + int(run_id, 16),
    )
    chosen = {"records": [{"partition": p, "offset": o} for p, o in positions]}
    path = f"/v1/dead-letters/{WORKITEMS_COMPLETED}/redrive"
    console = api.stack.processes["console"]
    env = {**console.env, "TIERLINE_CRASH_AT": "console.after_redrive_publish"}
    crashing = ServiceProcess("console", free_port(), env, api.stack.log_dir / "console-crash.log")
    crashing.start()
    try:
        crashing.wait_healthy()
        with pytest.raises(httpx.TransportError):  # it dies once Kafka has the copies
            await api.http.post(f"{crashing.url}{path}", json=chosen, headers=api.admin)
        assert crashing.process is not None
        assert crashing.process.wait(10) == 137
    finally:
        crashing.kill()

    # Nothing recorded the copies, so the next redrive publishes them again: once more, at most.
    again = await api.http.post(f"{console.url}{path}", json=chosen, headers=api.admin)
    assert again.status_code == 200, again.text
    assert (again.json()["redriven"], again.json()["skipped"]) == (4, 0)
    third = await api.http.post(f"{console.url}{path}", json=chosen, headers=api.admin)
    assert (third.json()["redriven"], third.json()["skipped"]) == (0, 4)
    copies = await read_all(api.stack.kafka_bootstrap, [WORKITEMS_COMPLETED])
    values = {encode_record(item) for item in lost}
    assert len([c for c in copies if c.value in values]) == 8  # two copies of each
    assert await metered(api, client, period) == 4  # each counted once


# --- helpers ---------------------------------------------------------------------------------


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


async def tierline_dlq(api: Api, *args: str) -> Run:
    """`tierline dlq ...` as an operator runs it, against the running console."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.cli",
        "dlq",
        *args,
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "TIERLINE_CONSOLE_URL": api.stack.url("console"),
            "TIERLINE_ADMIN_KEY": api.stack.admin_key,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def read_at(bootstrap: str, topic: str, places: list[dict[str, Any]]) -> list[Any]:
    """The records at these {partition, offset} places of `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        for place in places:
            tp = TopicPartition(topic, place["partition"])
            consumer.assign([tp])
            consumer.seek(tp, place["offset"])
            records: list[Any] = []
            async with asyncio.timeout(20):
                while not records:
                    records = (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(
                        tp, []
                    )
            assert records[0].offset == place["offset"]
            found.append(records[0])
    finally:
        await consumer.stop()
    return found
