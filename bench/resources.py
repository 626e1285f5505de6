"""CPU and memory of the processes under test, from /proc, and the machine they run on."""

from __future__ import annotations

import contextlib
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.supervisor import Stack


def process_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a process."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def descendants(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
                    found += descendants(int(entry.name))
    return found


def cpu_seconds(stack: Stack, infra: Any) -> dict[str, float]:
    figures = {name: f["cpu_seconds"] for name, f in resources(stack, infra).items()}
    own = os.times()
    figures["bench"] = own.user + own.system
    return figures


def resources(stack: Stack, infra: Any) -> dict[str, dict[str, float]]:
    figures = {}
    for name, process in stack.processes.items():
        if process.pid is not None:
            cpu, peak = process_figures(process.pid)
            figures[name] = {"cpu_seconds": round(cpu, 1), "peak_rss_mib": round(peak, 1)}
    if infra is not None:
        for name, server in (("kafka", infra.kafka), ("postgres", infra.postgres)):
            if server.pid is None:
                continue
            pids = [server.pid, *descendants(server.pid)]
            cpu = sum(process_figures(p)[0] for p in pids if Path(f"/proc/{p}").exists())
            peak = max(process_figures(p)[1] for p in pids if Path(f"/proc/{p}").exists())
            figures[name] = {"cpu_seconds": round(cpu, 1), "peak_rss_mib": round(peak, 1)}
    return figures


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        int(line.split()[1]) // 1024 // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
