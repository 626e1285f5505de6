"""A small run of the benchmark command keeps it working (its figures are not judged here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tools.supervisor import REPO_ROOT


def test_the_benchmark_runs_end_to_end_and_reports_every_figure(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "RESULTS.md"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--items",
            "3000",
            "--runs",
            "2",
            "--rates",
            "400",
            "--rate-seconds",
            "2",
            "--profile-items",
            "0",
            "--skip-ceiling",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.with_suffix(".json").read_text())
    assert figures["throughput"]["items_accepted"] == 3000
    assert figures["throughput"]["end_to_end_items_per_s"] > 0
    runs = figures["throughput"]["runs"]
    assert [run["items_accepted"] for run in runs] == [3000, 3000]
    assert len({run["period"] for run in runs}) == 2  # each run its own month
    spread = figures["throughput"]["spread"]
    assert spread["min"] <= spread["median"] <= spread["max"]
    [latency] = figures["latency"]
    assert latency["items"] == 800 and 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert set(latency["median_stage_ms"]) == {"intake", "classifier", "metering"}
    for stage, median in latency["median_stage_ms"].items():
        assert 0 <= median <= latency["p99_stage_ms"][stage]
    assert latency["metering_batches"] > 0 and latency["metering_mean_batch"] > 0
    assert figures["close"]["seconds"] > 0
    # the closed period holds the first throughput run's items alone, while others arrived
    assert figures["close"]["items"] == runs[0]["unique_items"]
    # its clients, the latency and profile ones (and any other test's in the same database)
    assert figures["close"]["invoices"] >= 50 * 3
    # billing's log line of the close, step by step, adds up to no more than the call took
    steps = figures["close"]["steps_ms"]
    assert list(steps) == ["barrier", "clients", "close", "publish", "answer"]
    assert sum(steps.values()) <= figures["close"]["seconds"] * 1000 + len(steps)
    assert figures["close"]["billing_cpu_ms"] >= 0
    assert {"intake", "classifier", "metering", "metering-2", "billing"} <= set(
        figures["resources"]
    )
    report = out.read_text()
    assert "End-to-end throughput" in report and "Latency" in report


def test_the_export_benchmark_runs_and_reports_both_exports(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "export.json"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "bench.export", "--items", "2000", "--json", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) == {"csv", "ndjson"}
    for form in figures.values():
        assert form["items"] == 2000 and form["bytes"] > 0 and form["items_per_s"] > 0
        assert 0 < form["rss_before_mib"] <= form["peak_rss_mib"]
    assert "items/s" in result.stdout
