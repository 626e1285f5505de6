"""Structured logs: one JSON object per line, with the message's Kafka coordinates when known."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import ConsumerRecord

#: Attributes a log call may pass in `extra=` that belong in the JSON line.
_FIELDS = (
    "service",
    "client_id",
    "topic",
    "partition",
    "offset",
    "offsets",
    "group_id",
    "message_id",
    "period",
    "invoice_id",
    "items",
    "batch",
    "error",
    "duration_ms",
    "steps_ms",  # how long each step of a long piece of work took: {"<step>": ms}
    "cpu_ms",  # the CPU time the process spent on that work (all its tasks meanwhile)
    "status",
    "path",
    # a service-level warning (services/metering/level_watcher.py)
    "service_level",
    "measured",
    "met",
    "attainment_percent",
    "target_percent",
    "credit_at_stake",
    "currency",
)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in _FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream's own loggers ("Received"/"Processed" per message or batch, with topic,
    # group_id and message_id) do not propagate and print coloured text: give them our lines.
    for name in ("faststream", "faststream.access", "faststream.access.kafka"):
        logging.getLogger(name).handlers[:] = [handler]
    # aiokafka is chatty at INFO about every rebalance step; keep its warnings.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def record_fields(record: ConsumerRecord[Any, Any]) -> dict[str, Any]:
    """`extra=` for a log line about one Kafka record: its client (the key) and coordinates."""
    key = record.key.decode(errors="replace") if isinstance(record.key, bytes) else record.key
    return {
        "client_id": key or None,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }


def batch_fields(records: Sequence[ConsumerRecord[Any, Any]]) -> dict[str, Any]:
    """`extra=` for a log line about a batch: its topic(s), size and offset range per partition
    (`offsets`: "topic/partition:first-last,..."); `partition`/`offset` are the first record's."""
    if not records:
        return {"batch": 0}
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for record in records:
        first, last = ranges.get((record.topic, record.partition), (record.offset, record.offset))
        ranges[(record.topic, record.partition)] = (
            min(first, record.offset),
            max(last, record.offset),
        )
    return {
        "topic": ",".join(sorted({topic for topic, _ in ranges})),
        "partition": records[0].partition,
        "offset": records[0].offset,
        "batch": len(records),
        "offsets": ",".join(f"{t}/{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items())),
    }
