"""Phase 6, a py-spy profile of the busiest service during a full-speed burst."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import httpx

from bench.common import Results, say, tagged
from bench.load import post_all, request_bodies, wait_counted
from bench.resources import process_figures
from shared.domain.periods import Period
from tools.supervisor import Stack


def profile(pid: int, seconds: int) -> dict[str, list[tuple[str, float]]]:
    """Where a running service spends its CPU, sampled with py-spy: the frames most often on
    the stack (inclusive) and the leaf functions themselves (self), as % of samples."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        try:
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "-p",
                    str(pid),
                    "-d",
                    str(seconds),
                    "-f",
                    "raw",
                    "-o",
                    out.name,
                    "-r",
                    "50",
                    "--nonblocking",
                ],
                capture_output=True,
                timeout=seconds + 60,
                check=False,
            )
        except OSError as error:  # py-spy missing or not permitted
            say(f"profile: skipped ({error})")
            return {"inclusive": [], "self": []}
        text = Path(out.name).read_text()
    inclusive: dict[str, float] = {}
    leaf: dict[str, float] = {}
    samples = 0.0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = float(count)
        samples += n
        frames = [_short(frame) for frame in stack.split(";")]
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0.0) + n
        leaf[frames[-1]] = leaf.get(frames[-1], 0.0) + n
    if not samples:
        return {"inclusive": [], "self": []}

    def top(table: dict[str, float], count: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])
        return [(name, round(100 * n / samples, 1)) for name, n in ranked[:count]]

    ours = {k: v for k, v in inclusive.items() if "services/" in k or "shared/" in k}
    return {"inclusive": top(ours, 15), "self": top(leaf, 20)}


def _short(frame: str) -> str:
    return re.sub(r" \(.*?/(site-packages|lib/python3\.11|main)/", " (", frame)


def slowest_stage(results: Results) -> str | None:
    """The service whose stage took longest at the highest fixed rate that was measured."""
    if not results.latency:
        return None
    stages: dict[str, float] = results.latency[-1]["median_stage_ms"]
    return max(stages, key=lambda stage: stages[stage]) if stages else None


async def profile_phase(
    stack: Stack,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    period: Period,
    results: Results,
    items: int,
    service: str | None = None,
) -> None:
    bodies, unique = request_bodies(tagged("prof"), items, period, seed=3)
    url = f"{stack.url('intake')}/v1/work-items"
    before = {n: process_figures(p.pid)[0] for n, p in stack.processes.items() if p.pid}
    posting = asyncio.create_task(post_all(http, url, stack.intake_key, bodies))
    await asyncio.sleep(3)
    mid = {n: process_figures(p.pid)[0] for n, p in stack.processes.items() if p.pid}
    busiest = service or slowest_stage(results) or max(mid, key=lambda n: mid[n] - before[n])
    say(f"profile: sampling {busiest} with py-spy for 15s, the burst at full speed")
    frames = await asyncio.to_thread(profile, stack.processes[busiest].pid or 0, 15)
    await posting
    await wait_counted(stack, pool, tagged("prof"), unique, timeout=1200)
    results.profile = {"service": busiest, "frames": frames}
