"""A bare aiokafka consume → produce loop, the ceiling Tierline's pipeline is compared with.

    python -m bench.bare_loop --bootstrap HOST:PORT --source T --target T-out --records N

Copies N records from ``--source`` to ``--target`` (acks=all, idempotent, a commit per batch)
and prints the records per second, from the first batch received to the last one sent.
Run as a process of its own, so it competes for the CPU as a service would.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from shared.infra.kafka_connection import KafkaConnection


async def copy(bootstrap: str, source: str, target: str, records: int) -> float:
    """Records per second over the copy of ``records`` records."""
    kafka = KafkaConnection.plaintext(bootstrap)  # the ceiling runs on a PLAINTEXT cluster only
    consumer = kafka.consumer(
        source,
        auto_offset_reset="earliest",
        group_id="bench-bare",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = kafka.producer(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=262144,
    )
    await consumer.start()
    await producer.start()
    try:
        done, started = 0, None
        while done < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batches:
                started = time.monotonic()
            futures = [
                await producer.send(target, record.value, key=record.key)
                for batch in batches.values()
                for record in batch
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
        assert started is not None
        return done / (time.monotonic() - started)
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_loop", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--records", type=int, required=True)
    args = parser.parse_args(argv)
    print(asyncio.run(copy(args.bootstrap, args.source, args.target, args.records)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
