"""The report: RESULTS.md (and its JSON) from the figures, with the history of earlier runs."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import INFRASTRUCTURE, Results
from tools.supervisor import REPO_ROOT


def render(results: Results) -> str:
    t, c = results.throughput, results.ceiling
    lines = [
        "# Tierline benchmark results",
        "",
        f"Machine: {results.machine['cpus']} cores ({results.machine['cpu_model']}), "
        f"{results.machine['memory_gib']} GiB, Python {results.machine['python']}; Kafka 4.1.1 "
        "(single node, KRaft) and PostgreSQL 15 on the same machine; one process per service"
        + "".join(
            f", {name} × {count}" for name, count in results.machine.get("instances", {}).items()
        )
        + f". Run on {results.machine['date']}.",
        "",
        f"Command: `{results.command}`",
        "",
        *targets(results),
        "",
        "## End-to-end throughput (intake over HTTP → counted in PostgreSQL)",
        "",
        "| run | month | items accepted | unique | intake | end to end "
        "| items/s accepted → counted | unique/s | CPU µs per item |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {n} | {r.get('period', '')} | {r.get('items_accepted', 0):,} "
            f"| {r.get('unique_items', 0):,} "
            f"| {r.get('intake_seconds')} s ({r.get('intake_items_per_s', 0):,}/s) "
            f"| {r.get('end_to_end_seconds')} s | **{r.get('end_to_end_items_per_s', 0):,}** "
            f"| {r.get('end_to_end_unique_per_s', 0):,} "
            f"| {sum(r.get('cpu_us_per_item', {}).values())} |"
            for n, r in enumerate(t.get("runs", [t]), start=1)
        ),
        "",
        *(
            [
                f"Median of {len(t['runs'])} runs: **{t['spread']['median']:,} items/s**; "
                f"spread {t['spread']['min']:,}–{t['spread']['max']:,} "
                f"({t['spread']['range_percent']} % of the median)."
            ]
            if "spread" in t
            else []
        ),
        "",
        "CPU per accepted item during the median run (µs): "
        + ", ".join(f"{n} {v}" for n, v in t.get("cpu_us_per_item", {}).items())
        + ".",
        "",
        "## Latency, intake receipt → counted",
        "",
        "| offered/s | achieved/s | items | p50 ms | p95 ms | p99 ms | max ms "
        "| median ms in intake / classifier / metering | p99 ms in each "
        "| metering batches: count, mean items, mean ms in the database "
        "| requests retried (503 or dropped) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['offered_per_s']:,} | {r['achieved_per_s']:,} | {r['items']:,} | {r['p50_ms']} "
        f"| {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} "
        f"| {' / '.join(str(v) for v in r.get('median_stage_ms', {}).values())} "
        f"| {' / '.join(str(v) for v in r.get('p99_stage_ms', {}).values()) or '–'} "
        f"| {r.get('metering_batches', '–')}, {r.get('metering_mean_batch', '–')}, "
        f"{r.get('metering_mean_db_ms', '–')} "
        f"| {r.get('requests_retried', 0)} |"
        for r in results.latency
    ]
    if results.history:
        lines += [
            "",
            "## Run to run (this file's recent complete runs, newest last)",
            "",
            "Two cores shared with Kafka and PostgreSQL on a virtual machine: the figures move "
            "from run to run, so read one run beside the others.",
            "",
            "| when (UTC) | commit | metering instances | items | items/s end to end "
            "| p99 ms at 5,000/s | close s (items) | largest service RSS MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {h['at']} | {h['commit']} | {h['metering_instances']} | {h['items'] or 0:,} "
            f"| {h['items_per_s'] or 0:,} | {h['p99_ms_at_5000']} "
            f"| {h['close_seconds']} ({h['close_items'] or 0:,}) | {h['peak_service_rss_mib']} |"
            for h in results.history
        ]
    if results.close:
        lines += [
            "",
            "## Closing a period",
            "",
            f"Closing {results.close['period']} with {results.close['items']:,} items "
            f"({results.close['invoices']} invoices): **{results.close['seconds']} s**.",
            *(
                [
                    "",
                    f"Meanwhile other clients' items kept arriving (2,000/s): "
                    f"{results.close['metered_during']:,} were counted during the close, p99 "
                    f"{results.close['metered_during_p99_ms']} ms from intake's receipt "
                    f"(max {results.close['metered_during_max_ms']} ms).",
                ]
                if "metered_during" in results.close
                else []
            ),
            *(
                [
                    "",
                    "Billing's own account of it (its log line), in ms: "
                    + ", ".join(f"{step} {ms:,}" for step, ms in results.close["steps_ms"].items())
                    + (
                        f"; billing's own CPU time over it: {results.close['billing_cpu_ms']:,}."
                        if results.close.get("billing_cpu_ms") is not None
                        else "."
                    ),
                ]
                if results.close.get("steps_ms")
                else []
            ),
        ]
    lines += [
        "",
        "## CPU and memory (whole run)",
        "",
        "| process | CPU seconds | peak RSS MiB |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {n} | {f['cpu_seconds']} | {f['peak_rss_mib']} |" for n, f in results.resources.items()
    ]
    if c:
        e2e = t.get("end_to_end_items_per_s", 0)
        lines += [
            "",
            f"## The ceiling on the same broker ({c['message_bytes']}-byte messages)",
            "",
            "| tool | messages/s | Tierline end to end as a share |",
            "| --- | --- | --- |",
            f"| Kafka ProducerPerformance (acks=all) | {c['kafka_producer_perf_per_s']:,} | "
            f"{share(e2e, c['kafka_producer_perf_per_s'])} |",
            f"| Kafka ConsumerPerformance | {c['kafka_consumer_perf_per_s']:,} | "
            f"{share(e2e, c['kafka_consumer_perf_per_s'])} |",
            f"| bare aiokafka consume → produce | {c['aiokafka_consume_produce_per_s']:,} | "
            f"{share(e2e, c['aiokafka_consume_produce_per_s'])} |",
        ]
    if results.profile:
        frames = results.profile["frames"]
        lines += [
            "",
            f"## Where the time goes: {results.profile['service']}",
            "",
            "py-spy, 15 s at full speed, % of CPU samples. Our code, inclusive:",
            "",
            "| % | frame |",
            "| --- | --- |",
        ]
        lines += [f"| {pct} | `{name}` |" for name, pct in frames["inclusive"]]
        lines += ["", "Leaf functions (self time):", "", "| % | frame |", "| --- | --- |"]
        lines += [f"| {pct} | `{name}` |" for name, pct in frames["self"]]
    return "\n".join(lines) + "\n"


def targets(results: Results) -> list[str]:
    """Issue 15's targets against this run's figures, with the distance where one is missed."""
    rows = []
    e2e = results.throughput.get("end_to_end_items_per_s")
    if e2e:
        runs = len(results.throughput.get("runs", [results.throughput]))
        rows.append(
            (
                f"≥ 20,000 items/s end to end (median of {runs} run{'s' if runs > 1 else ''})",
                f"{e2e:,}/s",
                "met" if e2e >= 20_000 else f"missed by {1 - e2e / 20_000:.0%}",
            )
        )
    for rate, limit in ((5000, 250), (10000, 1000)):
        found = next((r for r in results.latency if r["offered_per_s"] == rate), None)
        if found:
            p99, sustained = found["p99_ms"], found["achieved_per_s"] >= 0.98 * rate
            rows.append(
                (
                    f"p99 ≤ {limit:,} ms at {rate:,} items/s offered, sustained",
                    f"{p99} ms, {found['achieved_per_s']:,}/s achieved",
                    "met"
                    if p99 <= limit and sustained
                    else f"missed: {p99 / limit:.1f}× the target"
                    + ("" if sustained else ", not sustained"),
                )
            )
    if results.close:
        seconds = results.close["seconds"]
        rows.append(
            (
                f"close a {results.close['items']:,}-item period in ≤ 3 s",
                f"{seconds} s",
                "met" if seconds <= 3 else f"missed by {seconds - 3:.1f} s",
            )
        )
    services = {n: f for n, f in results.resources.items() if n not in INFRASTRUCTURE}
    if services:
        worst = max(services, key=lambda n: services[n]["peak_rss_mib"])
        peak = services[worst]["peak_rss_mib"]
        rows.append(
            (
                "no service above 300 MiB resident",
                f"{worst} {peak} MiB",
                "met" if peak <= 300 else "missed",
            )
        )
    if not rows:
        return []
    return [
        "",
        "## Targets",
        "",
        "| target | this run | |",
        "| --- | --- | --- |",
        *(f"| {t} | {v} | {verdict} |" for t, v, verdict in rows),
    ]


def share(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.1%}" if theirs else "n/a"


def save(results: Results, out: str) -> None:
    """Write what is known so far: a failure late in the run keeps the earlier figures."""
    Path(out).with_suffix(".json").write_text(json.dumps(results.__dict__, indent=2))
    Path(out).write_text(render(results))


HISTORY_RUNS = 10


def earlier_runs(out: str) -> list[dict[str, Any]]:
    """The run history kept in `out`'s JSON: one machine's figures vary from run to run (other
    tenants, which partitions the run's client ids hash to), so one run alone can mislead."""
    try:
        history: list[dict[str, Any]] = json.loads(Path(out).with_suffix(".json").read_text())[
            "history"
        ]
    except (OSError, ValueError, KeyError):
        return []
    return history


def headline(results: Results) -> dict[str, Any]:
    at_5000 = next((r for r in results.latency if r["offered_per_s"] == 5000), {})
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": commit or "?",
        "items": results.throughput.get("items_accepted"),
        "items_per_s": results.throughput.get("end_to_end_items_per_s"),
        "p99_ms_at_5000": at_5000.get("p99_ms"),
        "close_seconds": results.close.get("seconds"),
        "close_items": results.close.get("items"),
        "metering_instances": results.machine.get("instances", {}).get("metering", 1),
        "peak_service_rss_mib": max(
            (r["peak_rss_mib"] for n, r in results.resources.items() if n not in INFRASTRUCTURE),
            default=None,
        ),
    }
