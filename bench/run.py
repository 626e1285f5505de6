"""Tierline's benchmark: the real stack on this machine, driven over HTTP, measured end to end.

    ./tierline bench                # the full run (≥ 1,000,000 items), writes bench/RESULTS.md
    ./tierline bench --items 50000 --rates 1000 --rate-seconds 5 --skip-ceiling --out /tmp/r.md

The stack runs as deployed for volume: one process per service, except metering, which runs as
two instances of one consumer group (three partitions each), so one instance's transaction is in
PostgreSQL while the other decodes its next batch (`--instances` changes it).

Phases, each printing its figures as it goes:
1. throughput — intake over HTTP at full speed (concurrent clients, 1,000-item requests, 10 %
   re-sent duplicates), from the first request to the moment PostgreSQL holds every unique item,
   `--runs` times (3), each run its own clients and month: the median run and the spread (the
   runs after the first come last, after the close);
2. latency at fixed offered rates — intake's receipt to counted (`metering.items.received_at` to
   `metered_at`), p50/p95/p99, with metering's batch sizes and database time;
3. closing the period that holds the first throughput run's items (and only those: the other
   runs and phases use earlier months) while other clients' items arrive at 2,000/s: the close's
   duration, and how many of those were counted during it and how fast;
4. CPU seconds and peak resident memory of each service, Kafka and PostgreSQL;
5. the ceiling on the same broker: Kafka's ProducerPerformance / ConsumerPerformance at the same
   message size, and a bare aiokafka consume→produce loop; Tierline as a ratio of each;
6. a py-spy profile of the busiest service during a full-speed burst.

The parts: bench/load.py (the workload and driving intake), bench/phases/ (one module a phase),
bench/resources.py (CPU and memory from /proc), bench/report.py (RESULTS.md and its history),
bench/bare_loop.py (the bare consume → produce loop, run as a process of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import CLIENTS, RUN_TAG, Results, say, tagged
from bench.load import agreement
from bench.phases.ceiling import ceiling_phase
from bench.phases.close import close_phase
from bench.phases.latency import latency_phase
from bench.phases.profile import profile as profile  # for the peer kit: bench/peer_compat
from bench.phases.profile import profile_phase
from bench.phases.throughput import summary, throughput_phase
from bench.report import HISTORY_RUNS, earlier_runs, headline, save
from bench.resources import descendants as descendants  # for the peer kit: bench/peer_compat
from bench.resources import machine, resources
from shared.domain.periods import period_of
from tools.localinfra import free_port
from tools.supervisor import REPO_ROOT, SERVICES, Stack


@contextlib.contextmanager
def infrastructure(data_dir: Path) -> Iterator[tuple[str, str, Any]]:
    kafka, database = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("DATABASE_URL")
    if kafka and database:
        yield kafka, database, None
        return
    from tools.localinfra import LocalInfra

    with LocalInfra(data_dir) as infra:
        yield infra.kafka_bootstrap, infra.database_url, infra


async def run(args: argparse.Namespace, results: Results, data_dir: Path) -> None:
    say(f"starting Kafka and PostgreSQL under {data_dir}")
    with infrastructure(data_dir) as (kafka, database, infra):
        ports = {name: free_port() for name in SERVICES}
        stack = Stack(
            kafka,
            database,
            data_dir / "logs",
            ports=ports,
            instances=args.instances,
            extra_env={
                "BILLING_AUTO_CLOSE": "false",
                "LOG_LEVEL": "WARNING",
                "BILLING_CLOSE_BARRIER_TIMEOUT_SECONDS": "600",
            },
            # billing's close logs its steps at INFO: the close phase reports them
            service_env={"billing": {"LOG_LEVEL": "INFO"}},
        )
        with stack:
            say("services up")
            pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
            assert pool is not None
            # The throughput phase fills `period`, which is then closed; the other phases'
            # items go to the month before, so the closed period holds the 1M-item run alone.
            period = period_of(datetime.now(UTC), "UTC").previous()
            other = period.previous()
            async with httpx.AsyncClient(
                timeout=120, limits=httpx.Limits(max_connections=64)
            ) as http:
                admin = {"Authorization": f"Bearer {stack.admin_key}"}
                runs = [(tagged(f"tp{chr(ord('a') + r)}"), r) for r in range(args.runs)]

                async def put_agreements(*prefixes: str) -> None:
                    for prefix in prefixes:
                        for n in range(CLIENTS):
                            client = f"{prefix}{n}"
                            response = await http.put(
                                f"{stack.url('billing')}/v1/agreements/{client}",
                                json=agreement(client, service_levels=args.service_levels),
                                headers=admin,
                            )
                            response.raise_for_status()

                # The later runs' clients get theirs after the close: it closes every client
                # with an agreement in force, and they have nothing in its period.
                await put_agreements(
                    runs[0][0], tagged("prof"), *(tagged(f"lat{r}x") for r in args.rates)
                )
                # Run 1 fills `period`, which is closed; the other runs come after the latency,
                # profile and close phases (so those see the system as one run left it, as in
                # earlier reports), each into a month before `other`.
                done: list[dict[str, Any]] = []

                async def throughput_run(prefix: str, r: int) -> None:
                    month = period
                    if r:
                        await put_agreements(prefix)
                        month = other
                        for _ in range(r):
                            month = month.previous()
                    say(f"throughput: run {r + 1} of {args.runs}")
                    done.append(
                        await throughput_phase(
                            stack,
                            pool,
                            http,
                            args.items,
                            month,
                            infra,
                            prefix=prefix,
                            seed=1 + r,
                            opened=args.service_levels,
                        )
                    )
                    results.throughput = {**summary(done), "closed_run": done[0]}
                    save(results, args.out)

                await throughput_run(*runs[0])
                for rate in args.rates:
                    await latency_phase(stack, pool, http, rate, args.rate_seconds, other, results)
                    save(results, args.out)
                if args.profile_items:
                    try:
                        await profile_phase(
                            stack,
                            pool,
                            http,
                            other,
                            results,
                            args.profile_items,
                            args.profile_service,
                        )
                    except (OSError, subprocess.SubprocessError) as error:
                        say(f"profile: skipped ({error})")
                closed = results.throughput["closed_run"]
                await close_phase(stack, pool, http, period, other, results, closed["unique_items"])
                save(results, args.out)
                for prefix, r in runs[1:]:
                    await throughput_run(prefix, r)
                say(
                    f"throughput: runs {[d['end_to_end_items_per_s'] for d in done]}, spread "
                    f"{results.throughput['spread']}"
                )
            await pool.close()
            results.resources = resources(stack, infra)
            say(f"resources: {json.dumps(results.resources)}")
            save(results, args.out)
        if not args.skip_ceiling:
            message_bytes = 350
            await ceiling_phase(stack.kafka, message_bytes, args.ceiling_records, results)
    shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tierline bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--items",
        type=int,
        default=1_112_000,
        help="items of the throughput run; with 10 %% re-sent, the default puts just over "
        "1,000,000 unique items in the period that is then closed",
    )
    parser.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",") if x], default=[1000, 5000, 10000]
    )
    parser.add_argument("--rate-seconds", type=float, default=30)
    parser.add_argument(
        "--profile-items",
        type=int,
        default=200_000,
        help="items of the profiled burst (0: no profile)",
    )
    parser.add_argument(
        "--profile-service", choices=SERVICES, help="profile this service (default: the busiest)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="throughput runs of --items each (each its own clients and month): the report "
        "gives the median and the spread; the first run's month is the one closed",
    )
    parser.add_argument("--ceiling-records", type=int, default=1_000_000)
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument(
        "--instances",
        type=lambda s: {k: int(v) for k, v in (p.split("=") for p in s.split(",") if p)},
        default={"metering": 2},
        help="instances per service, e.g. metering=2,classifier=2 (default: metering=2, "
        "one of each other service)",
    )
    parser.add_argument(
        "--tag", default=uuid.uuid4().hex[:4], help="client id tag of this run (default: random)"
    )
    parser.add_argument(
        "--service-levels",
        action="store_true",
        help="every agreement has three service levels (SPEC §11) and every throughput item an "
        "opened_at: compare with a run without, for what measuring them costs",
    )
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)
    RUN_TAG["tag"] = args.tag
    results = Results(
        machine={**machine(), "instances": args.instances},
        command="./tierline bench " + " ".join(argv or sys.argv[1:]),
    )
    data_dir = Path(tempfile.mkdtemp(prefix="tierline-bench-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as nobody when we are root
    results.history = earlier_runs(args.out)
    asyncio.run(run(args, results, data_dir))
    results.history = [*results.history, headline(results)][-HISTORY_RUNS:]
    save(results, args.out)
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
