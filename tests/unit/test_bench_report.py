"""The benchmark's report of several throughput runs: the median run, every run and the spread,
and issue 15's targets judged against them (the figures themselves come from a real run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bench.common import Results
from bench.phases.close import close_account
from bench.phases.throughput import summary
from bench.report import render, targets
from shared.domain.periods import parse_period


def run(rate: int, month: str) -> dict[str, Any]:
    return {
        "period": month,
        "items_accepted": 1_112_000,
        "unique_items": 1_001_251,
        "intake_seconds": 20.0,
        "intake_items_per_s": 55_600,
        "end_to_end_seconds": round(1_112_000 / rate, 2),
        "end_to_end_items_per_s": rate,
        "end_to_end_unique_per_s": rate * 9 // 10,
        "cpu_us_per_item": {"intake": 5, "kafka": 10},
    }


def test_the_median_run_is_reported_with_every_run_and_the_spread() -> None:
    runs = [run(21_000, "2026-11"), run(18_000, "2026-09"), run(24_000, "2026-08")]
    found = summary(runs)
    assert found["end_to_end_items_per_s"] == 21_000  # the median, not the mean or the best
    assert found["period"] == "2026-11"
    assert found["spread"] == {
        "min": 18_000,
        "median": 21_000,
        "max": 24_000,
        "range_percent": 28.6,
    }
    close = {
        "period": "2026-11",
        "items": 1_001_251,
        "invoices": 250,
        "seconds": 1.9,
        "metered_during": 3_800,
        "metered_during_p99_ms": 120.5,
        "metered_during_max_ms": 180.0,
        "steps_ms": {"barrier": 310, "close": 1_450, "publish": 120, "answer": 20},
        "billing_cpu_ms": 1_210,
    }
    report = render(Results(machine=MACHINE, throughput=found, close=close))
    assert "3,800 were counted during the close, p99 120.5 ms" in report
    assert "in ms: barrier 310, close 1,450, publish 120, answer 20; billing's own CPU" in report
    assert "CPU time over it: 1,210." in report
    assert report.count("| 1,112,000 |") == 3  # a row per run
    assert "Median of 3 runs: **21,000 items/s**; spread 18,000–24,000 (28.6 % of the median)" in (
        report
    )


def test_the_targets_are_issue_15s() -> None:
    results = Results(
        throughput=summary([run(19_000, "2026-11")]),
        latency=[
            {"offered_per_s": 5000, "achieved_per_s": 5001, "p99_ms": 240.0},
            {"offered_per_s": 10000, "achieved_per_s": 9000, "p99_ms": 800.0},
        ],
        close={"items": 1_001_251, "seconds": 3.2},
    )
    verdicts = {line.split(" | ")[0].lstrip("| "): line for line in targets(results) if "|" in line}
    assert "missed by 5%" in verdicts["≥ 20,000 items/s end to end (median of 1 run)"]
    assert verdicts["p99 ≤ 250 ms at 5,000 items/s offered, sustained"].endswith("| met |")
    assert "not sustained" in verdicts["p99 ≤ 1,000 ms at 10,000 items/s offered, sustained"]
    assert "missed by 0.2 s" in verdicts["close a 1,001,251-item period in ≤ 3 s"]


MACHINE = {"cpus": 2, "cpu_model": "test", "memory_gib": 1, "python": "3.11", "date": "today"}


def test_the_close_account_is_billings_own_log_line_for_that_period(tmp_path: Path) -> None:
    log = tmp_path / "billing.log"
    lines = [
        {"msg": "closed 2026-10 for 3 client(s)", "period": "2026-10", "steps_ms": {"close": 9}},
        {"msg": "closed 2026-11 for acme: invoiced", "period": "2026-11"},
        {"msg": "closed 2026-11 for 250 client(s)", "period": "2026-11",
         "steps_ms": {"barrier": 310, "close": 1450}, "cpu_ms": 1210},
    ]  # fmt: skip
    log.write_text("\n".join(orjson.dumps(line).decode() for line in lines) + "\nnot json\n")
    assert close_account(log, parse_period("2026-11")) == {
        "steps_ms": {"barrier": 310, "close": 1450},
        "billing_cpu_ms": 1210,
    }
    assert close_account(log, parse_period("2026-09")) == {}
