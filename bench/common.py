"""What every part of the benchmark shares: the run's client ids, its results, its log line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

CLIENTS = 50
#: Set per run so that runs against one database never count each other's items.
RUN_TAG = {"tag": ""}


def tagged(name: str) -> str:
    return f"{name}{RUN_TAG['tag']}-"


#: Not Tierline's services: the figures of the broker and the database are reported apart.
INFRASTRUCTURE = frozenset({"kafka", "postgres"})
REQUEST_ITEMS = 1000
CONCURRENCY = 6


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    throughput: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    close: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    #: Headline figures of earlier complete runs written to the same file, newest last.
    history: list[dict[str, Any]] = field(default_factory=list)
