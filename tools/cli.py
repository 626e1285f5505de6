"""`tierline up`: the whole system on one machine, with a demo that ends in an invoice.

Starts its own Kafka and PostgreSQL unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set, then
the four services, loads the demo agreements, streams a demo workload for last month, closes that
month for the demo's clients and prints the invoices and where to look. An agreement with a
commitment (SPEC §11) starts 11 months before last month, so last month is the 12th period of its
contract year and its invoice carries the year's true-up beside a service credit. Ctrl-C stops
everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import httpx
import yaml

from shared.domain.commitment import PERIODS_PER_YEAR
from shared.domain.periods import Period, period_bounds, period_of
from tools.agreements_cli import add_agreements_commands
from tools.agreements_cli import run as run_agreements
from tools.dlq_cli import add_dlq_commands
from tools.dlq_cli import run as run_dlq
from tools.items_cli import add_items_commands
from tools.items_cli import run as run_items
from tools.reclassify_cli import add_reclassify_commands
from tools.reclassify_cli import run as run_reclassify
from tools.supervisor import REPO_ROOT, Stack, new_client_keys, ports_from_env
from tools.workload import Mix, demo_items

DEMO_DIR = REPO_ROOT / "deploy" / "demo"


def say(message: str) -> None:
    print(f"[tierline {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def infrastructure(
    data_dir: Path, *, kafka_brokers: int = 1, postgres_ha: bool = False
) -> Iterator[tuple[str, str]]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    if kafka and database:
        say(f"using Kafka at {kafka} and PostgreSQL at {database}")
        yield kafka, database
        return
    from tools.localinfra import LocalInfra

    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "").strip().upper()
    if not kafka and protocol not in ("", "PLAINTEXT"):
        raise SystemExit(
            f"KAFKA_SECURITY_PROTOCOL is {protocol} but KAFKA_BOOTSTRAP_SERVERS is not set: "
            "the local broker `./tierline up` starts speaks PLAINTEXT only"
        )
    if postgres_ha and database:
        say("DATABASE_URL is set: --postgres-ha starts no PostgreSQL of its own")
    postgres = "PostgreSQL with failover (Patroni, etcd)" if postgres_ha else "PostgreSQL"
    brokers = (
        "a local Kafka broker (KRaft)"
        if kafka_brokers == 1
        else f"a local Kafka cluster of {kafka_brokers} KRaft brokers"
    )
    say(
        f"starting {brokers} and {postgres} under "
        f"{data_dir} (the first run fetches the Kafka jars from Maven Central)"
    )
    with LocalInfra(
        data_dir,
        kafka=not kafka,
        postgres=not database,
        kafka_brokers=kafka_brokers,
        postgres_ha=postgres_ha,
    ) as infra:
        yield kafka or infra.kafka_bootstrap, database or infra.database_url


def run_demo(stack: Stack, *, now: datetime) -> list[dict[str, Any]]:
    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    intake = {"Authorization": f"Bearer {stack.intake_key}"}
    billing, intake_url = stack.url("billing"), stack.url("intake")
    period = period_of(now, "UTC").previous()
    committed = []
    with httpx.Client(timeout=60) as http:
        for path in sorted(DEMO_DIR.glob("*.yaml")):
            client_id = path.stem
            agreement = demo_agreement(path, period)
            response = http.put(
                f"{billing}/v1/agreements/{client_id}",
                content=agreement.body,
                headers={**admin, "Content-Type": agreement.content_type},
            )
            response.raise_for_status()
            say(f"agreement {client_id} v{response.json()['version']} loaded")
            if agreement.committed:
                committed.append(client_id)
        items = _demo_workload(period)
        sent = 0
        started = time.perf_counter()
        for chunk in range(0, len(items), 500):
            batch = items[chunk : chunk + 500]
            response = http.post(f"{intake_url}/v1/work-items", json=batch, headers=intake)
            response.raise_for_status()
            sent += response.json()["accepted"]
        say(
            f"streamed {sent} work items for {period.key} ({len(items) - len(set(_keys(items)))} "
            f"re-sent duplicates) in {time.perf_counter() - started:.1f}s"
        )
        say(f"closing {period.key} (waits until every accepted item is metered)")
        invoices: list[dict[str, Any]] = []
        # Only the demo's clients (an existing database may hold others). A commitment's close
        # first closes its year's earlier periods; closed first, its invoices are the oldest of
        # the demo, so the console's recent invoices still show every client's.
        clients = [*committed, *(c for c in demo_clients() if c not in committed)]
        for client_id in clients:
            response = http.post(
                f"{billing}/v1/periods/{period.key}/close",
                json={"client_id": client_id},
                headers=admin,
            )
            response.raise_for_status()
            invoices += response.json()["invoices"]
        if committed:
            say(
                f"{period.key} is the 12th period of {', '.join(committed)}'s contract year: "
                "its close closed the year's earlier periods first"
            )
        return invoices


def contract_start(last: Period) -> date:
    """The `effective_from` that makes `last` the 12th period of the first contract year."""
    first = last
    for _ in range(PERIODS_PER_YEAR - 1):
        first = first.previous()
    return first.first_day


class DemoAgreement(NamedTuple):
    body: bytes
    content_type: str
    #: It has a commitment: `period` is the 12th period of its first contract year.
    committed: bool


def demo_agreement(path: Path, period: Period) -> DemoAgreement:
    """A demo agreement as `run_demo` PUTs it: the YAML as it is, or, for one with a
    commitment, JSON with `effective_from` set so that `period` ends its first contract year."""
    text = path.read_bytes()
    body = yaml.safe_load(text)
    if "commitment" not in body:
        return DemoAgreement(text, "application/yaml", committed=False)
    body["effective_from"] = contract_start(period).isoformat()
    return DemoAgreement(json.dumps(body, default=str).encode(), "application/json", committed=True)


def demo_clients() -> list[str]:
    """The demo's clients: one per agreement in deploy/demo."""
    return sorted(path.stem for path in DEMO_DIR.glob("*.yaml"))


def _demo_workload(period: Period) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    acme_start, acme_end = period_bounds(period, "America/New_York")
    items += demo_items("acme", acme_start, acme_end, Mix())
    globex_start, globex_end = period_bounds(period, "Asia/Tokyo")
    globex = demo_items(
        "globex", globex_start, globex_end, Mix(customer_care=300, data_entry=0, ap_large=0), seed=9
    )
    for n, item in enumerate(globex[:40]):
        item["tags"] = ["payroll"]
        item["id"] = f"globex-payroll-{n}"
    items += globex
    # Service levels (SPEC §11): each item says when it was opened; 80 % of care work within
    # 4 hours misses its 90 % level, every AP invoice within 24 business hours meets its level.
    initech_start, initech_end = period_bounds(period, "Europe/Berlin")
    items += demo_items(
        "initech",
        initech_start,
        initech_end,
        Mix(customer_care=300, data_entry=0, ap_large=60),
        seed=13,
        opened=True,
    )
    items += items[:25]  # ticketing systems re-send: these must be counted once
    return items


def _keys(items: list[dict[str, object]]) -> Iterator[tuple[object, object]]:
    return ((item["client_id"], item["id"]) for item in items)


def print_invoice(invoice: dict[str, Any]) -> None:
    print(
        f"\n  invoice {invoice['invoice_id']}  {invoice['period_start']} .. {invoice['period_end']}"
    )
    print(
        f"  tier {invoice['tier']['name']} ({invoice['tier']['reason']}), "
        f"{invoice['usage']['items']} items, {invoice['usage']['weighted_units']} weighted units"
    )
    for line in invoice["lines"]:
        if line.get("service_line"):
            what = f" {line['service_line']}/{line['complexity']}"
        elif line.get("service_level"):
            what = f" {line['service_level']}"
        elif line.get("period"):
            what = f" for {line['period']}"
        else:
            what = ""
        print(
            f"    {line['kind']:<19}{what:<26} {line['quantity']:>10} x {line['unit_price']:>12}"
            f" = {line['amount']:>12} {invoice['currency']}"
        )
    print(f"    {'total':<56} {invoice['total']:>27} {invoice['currency']}")
    for level in invoice.get("service_levels") or ():
        attained, target = level["attainment_percent"], level["target_percent"]
        result = f"{attained}% against {target}%" if attained else "nothing measured"
        print(f"    service level {level['id']}: {result}{' (missed)' if level['missed'] else ''}")


def up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicitly: a shell may start us with SIGINT ignored (a background job), and SIGTERM and
    # SIGHUP should stop what we started just as Ctrl-C does.
    for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, on_signal)
    try:
        ports = ports_from_env(os.environ)
    except ValueError as error:
        say(f"configuration error: {error}")
        return 2
    if args.kafka_brokers != 1 and os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        say("configuration error: --kafka-brokers starts a local cluster, but "
            "KAFKA_BOOTSTRAP_SERVERS names one already")  # fmt: skip
        return 2
    started = time.perf_counter()
    try:
        local = infrastructure(
            data_dir / "infra", kafka_brokers=args.kafka_brokers, postgres_ha=args.postgres_ha
        )
        with local as (kafka, database):
            admin_key = os.environ.get("TIERLINE_ADMIN_KEY", "")
            intake_keys = os.environ.get("TIERLINE_INTAKE_KEYS", "")
            if not (admin_key and intake_keys):
                say("no TIERLINE_ADMIN_KEY / TIERLINE_INTAKE_KEYS set: generated fresh keys")
            client_keys = os.environ.get("TIERLINE_CLIENT_KEYS", "")
            if not client_keys.strip():
                client_keys = new_client_keys(demo_clients())
                say("no TIERLINE_CLIENT_KEYS set: generated a read-only key per demo client")
            stack = Stack(
                kafka,
                database,
                data_dir / "logs",
                admin_key=admin_key,
                intake_keys=intake_keys,
                client_keys=client_keys,
                ports=ports,
                # The local run command may use published default keys (a developer's .env);
                # the services refuse them everywhere else (shared/infra/auth.py).
                extra_env={"LOG_LEVEL": "INFO", "TIERLINE_LOCAL_RUN": "true"},
            )
            say("starting intake, classifier, metering, billing and the console")
            with stack:
                say(f"all services healthy after {time.perf_counter() - started:.1f}s")
                if not args.no_demo:
                    invoices = run_demo(stack, now=datetime.now(UTC))
                    say(f"first invoice after {time.perf_counter() - started:.1f}s:")
                    for invoice in invoices:
                        print_invoice(invoice)
                print(
                    f"""
Tierline is running. Where to look:
  console     {stack.url("console")}/?key={stack.admin_key}
  client page {stack.url("console")}/client   (a client key, or the admin key and a client id)
  intake      POST {stack.url("intake")}/v1/work-items      (docs: {stack.url("intake")}/docs)
  billing     {stack.url("billing")}/v1/invoices            (docs: {stack.url("billing")}/docs)
  usage       {stack.url("metering")}/v1/usage/acme?period=YYYY-MM
  metrics     /metrics and /healthz on every service above and {stack.url("classifier")}
  Kafka       {kafka}    PostgreSQL  {database}
  logs        {data_dir / "logs"}
  admin key   {stack.admin_key}
  intake keys {stack.intake_keys}
  client keys {stack.client_keys}   (read-only, each its own client's documents)
Press Ctrl-C to stop everything.""",
                    flush=True,
                )
                while True:
                    for process in stack.processes.values():
                        if not process.alive():
                            say(f"{process.name} exited; its log:\n{process.tail()}")
                            return 1
                    time.sleep(1)
    except KeyboardInterrupt:
        say("stopping everything this command started")
        return 0


def kafka_brokers(text: str) -> int:
    """`--kafka-brokers`: 1, or a local cluster of 3 to 9 brokers."""
    from tools.localinfra.cluster import kafka_brokers as brokers

    try:
        return brokers(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tierline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("up", help="run the whole system (and a demo) on this machine")
    run.add_argument(
        "--data-dir",
        default=os.environ.get("TIERLINE_DATA_DIR", "/tmp/tierline"),
        help="where local Kafka/PostgreSQL data and service logs go",
    )
    run.add_argument("--no-demo", action="store_true", help="skip the demo workload")
    run.add_argument(
        "--kafka-brokers",
        type=kafka_brokers,
        default=1,
        help="1 (default): one local broker; 3 or more: a local KRaft cluster whose topics "
        "have 3 copies, 2 in sync (a broker may die)",
    )
    run.add_argument(
        "--postgres-ha",
        action="store_true",
        help="PostgreSQL as a primary and a synchronous standby (Patroni, etcd) with failover",
    )
    add_dlq_commands(commands)
    add_reclassify_commands(commands)
    add_agreements_commands(commands)
    add_items_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args)
    if args.command == "dlq":
        return run_dlq(args)
    if args.command == "reclassify":
        return run_reclassify(args)
    if args.command == "agreements":
        return run_agreements(args)
    if args.command == "items":
        return run_items(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
