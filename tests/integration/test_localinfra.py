"""The local Kafka and PostgreSQL really serve, survive restarts and leave no process behind."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.topics import new_topic
from tools.localinfra import REPO_ROOT, LocalInfra, LocalKafka, pid_alive, postgres_bin_dir

needs_local_tools = pytest.mark.skipif(
    shutil.which("java") is None or not Path("/proc").is_dir(),
    reason="tools.localinfra needs java and Linux",
)


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume_first(bootstrap: str, topic: str) -> bytes | None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            message = await consumer.getone()
    finally:
        await consumer.stop()
    value: bytes | None = message.value
    return value


async def test_a_message_goes_through_the_broker(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, "test-localinfra")

    await _produce(kafka_bootstrap, topic, b"hello")

    assert await _consume_first(kafka_bootstrap, topic) == b"hello"


async def test_postgres_answers_sql(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("select 1") == 1
        assert await connection.fetchval("show max_connections") == "200"
    finally:
        await connection.close()


async def test_a_message_survives_a_broker_restart(
    kafka_bootstrap: str, infra: LocalInfra | SimpleNamespace
) -> None:
    topic = await new_topic(kafka_bootstrap, "test-localinfra")
    await _produce(kafka_bootstrap, topic, b"before restart")

    await asyncio.to_thread(infra.kafka.restart)

    assert infra.kafka.bootstrap_servers == kafka_bootstrap  # same port after the restart
    assert await _consume_first(kafka_bootstrap, topic) == b"before restart"


async def test_rows_survive_a_database_restart(
    database_url: str, infra: LocalInfra | SimpleNamespace
) -> None:
    table = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f"create table {table} (v int); insert into {table} values (7)")
    finally:
        await connection.close()

    await asyncio.to_thread(infra.postgres.restart)

    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval(f"select v from {table}") == 7
    finally:
        await connection.close()


# --- no orphans: these start their own LocalInfra, independent of the session's services -------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_all_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tierline-test-"))
    path.chmod(0o755)  # PostgreSQL runs as nobody when we are root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_local_tools
def test_stop_leaves_no_process(data_dir: Path) -> None:
    postgres_bin_dir()  # a clear error if PostgreSQL is missing
    with LocalInfra(data_dir, fast=True) as infra:
        assert isinstance(infra.kafka, LocalKafka)  # one broker, unless asked for a cluster
        servers = [infra.kafka.pid, infra.postgres.pid]
        guards = [infra.kafka.guard_pid, infra.postgres.guard_pid]
        assert None not in servers and None not in guards
        processes = [pid for guard in guards if guard for pid in [guard, *_descendants(guard)]]
        assert all(pid_alive(pid) for pid in processes)
        assert len(processes) >= 5  # 2 guards, java, postmaster and its auxiliary processes

    assert _wait_all_gone(processes, timeout=5) == []
    assert infra.kafka.pid is None and infra.postgres.pid is None
    infra.stop()  # idempotent


@needs_local_tools
def test_a_killed_parent_leaves_no_process(data_dir: Path) -> None:
    script = (
        "import sys, time\n"
        "from tools.localinfra import LocalInfra\n"
        "infra = LocalInfra(sys.argv[1], fast=True).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(data_dir)], cwd=REPO_ROOT, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == b"ready\n"
        processes = _descendants(parent.pid)
        assert len(processes) >= 5
    finally:
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the guards are left
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()

    assert _wait_all_gone(processes, timeout=45) == []
