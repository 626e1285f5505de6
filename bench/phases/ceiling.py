"""Phase 5, the ceiling on the same broker: Kafka's ProducerPerformance and ConsumerPerformance at
the benchmark's message size, and a bare aiokafka consume → produce loop (bench/bare_loop.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from aiokafka.admin import NewTopic

from bench.common import Results, say
from shared.infra.kafka_connection import KafkaConnection
from tools.localinfra import REPO_ROOT, kafka_jars_dir


def kafka_tool(tool: str, args: list[str]) -> str:
    lib = kafka_jars_dir()
    command = ["java", "-Xmx512m", "-cp", f"{lib}/*", f"org.apache.kafka.tools.{tool}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=True).stdout


async def create_topics(kafka: KafkaConnection, topics: list[str]) -> None:
    admin = kafka.admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1) for topic in topics])
    finally:
        await admin.close()


async def ceiling_phase(
    kafka: KafkaConnection, message_bytes: int, records: int, results: Results
) -> None:
    if kafka.security_protocol != "PLAINTEXT":
        # Kafka's Java tools and the bare loop are given the bootstrap address alone.
        say(f"ceiling: skipped (PLAINTEXT clusters only; this is {kafka.describe()})")
        return
    bootstrap = kafka.bootstrap_servers
    topic = f"bench-ceiling-{int(time.time())}"
    await create_topics(kafka, [topic, f"{topic}-out"])
    say(f"ceiling: ProducerPerformance, {records:,} records of {message_bytes} bytes, acks=all")
    out = kafka_tool(
        "ProducerPerformance",
        [
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            str(message_bytes),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
            "linger.ms=5",
            "batch.size=262144",
        ],
    )
    match = re.findall(r"([\d.]+) records/sec", out)
    produced = float(match[-1]) if match else 0.0
    say("ceiling: ConsumerPerformance")
    out = kafka_tool(
        "ConsumerPerformance",
        [
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--messages",
            str(records),
            "--timeout",
            "60000",
        ],
    )
    # CSV: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, …
    rows = [line for line in out.splitlines() if line and line[0].isdigit()]
    consumed = float(rows[-1].split(",")[5]) if rows else 0.0
    say("ceiling: bare aiokafka consume → produce loop")
    loop = bare_loop(bootstrap, topic, f"{topic}-out", min(records, 300_000))
    results.ceiling = {
        "message_bytes": message_bytes,
        "kafka_producer_perf_per_s": round(produced),
        "kafka_consumer_perf_per_s": round(consumed),
        "aiokafka_consume_produce_per_s": round(loop),
    }
    say(f"ceiling: {results.ceiling}")


def bare_loop(bootstrap: str, source: str, target: str, records: int) -> float:
    """Records per second of ``python -m bench.bare_loop``, a process of its own."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.bare_loop", "--bootstrap", bootstrap,
         "--source", source, "--target", target, "--records", str(records)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=True,
    ).stdout  # fmt: skip
    return float(out.strip().splitlines()[-1])
