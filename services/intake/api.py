"""The intake HTTP route: validate everything, publish everything, then answer 202."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.intake.parsing import (
    MAX_BYTES,
    InvalidItems,
    TooManyItems,
    UnsupportedMediaType,
    media_type,
    parse_work_items,
)
from shared.events import WORKITEMS_COMPLETED, encode_record
from shared.http import IntakeCaller
from shared.kafka import BatchProducer

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "5"


class IntakeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tierline_intake_requests",
            "Intake requests by HTTP status",
            ["status"],
            registry=registry,
        )
        self.items = Counter(
            "tierline_intake_items_accepted", "Work items accepted", registry=registry
        )
        self.publish_seconds = Histogram(
            "tierline_intake_publish_seconds",
            "Time from validated request to every item acknowledged by Kafka",
            registry=registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


async def send_all(producer: BatchProducer, messages: Iterable[tuple[str, bytes, bytes]]) -> int:
    """Publish and wait for every acknowledgement (acks=all): only then may intake answer 202."""
    return await producer.send_many(messages)


def build_router(
    producer: BatchProducer, metrics: IntakeMetrics, *, publish_timeout: float
) -> APIRouter:
    router = APIRouter()

    def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        metrics.requests.labels(status=str(status)).inc()
        return JSONResponse(body, status_code=status, headers=headers)

    @router.post(
        "/v1/work-items",
        status_code=202,
        summary="Report completed work items",
        responses={
            202: {"description": "Every item is durably in workitems.completed"},
            413: {"description": "Over 5,000 items or 10 MiB"},
            415: {"description": "Not application/json or application/x-ndjson"},
            422: {"description": "Invalid items, each with its index and field"},
            503: {"description": "Kafka cannot take the write now; retry after Retry-After"},
        },
    )
    async def post_work_items(request: Request, caller: IntakeCaller) -> Response:
        received_at = datetime.now(UTC)
        try:
            kind = media_type(request.headers.get("content-type"))
        except UnsupportedMediaType as error:
            return answer(
                415,
                {
                    "detail": f"unsupported content type {error}; "
                    "use application/json or application/x-ndjson"
                },
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BYTES:
            return answer(413, {"detail": f"the body is over {MAX_BYTES} bytes"})
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BYTES:
                return answer(413, {"detail": f"the body is over {MAX_BYTES} bytes"})
        try:
            records = parse_work_items(
                bytes(body), kind, received_at=received_at, key_source=caller.source or ""
            )
        except TooManyItems as error:
            return answer(413, {"detail": str(error)})
        except InvalidItems as error:
            return answer(422, {"errors": [e.to_wire() for e in error.errors]})

        started = time.perf_counter()
        messages = (
            (WORKITEMS_COMPLETED, record.client_id.encode(), encode_record(record))
            for record in records
        )
        try:
            await asyncio.wait_for(send_all(producer, messages), publish_timeout)
        except (KafkaError, TimeoutError, OSError) as error:
            log.warning(
                "kafka could not take the write",
                extra={"items": len(records), "error": repr(error)},
            )
            return answer(
                503,
                {"detail": "Kafka cannot take the write now; retry later"},
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.items.inc(len(records))
        return answer(202, {"accepted": len(records)})

    return router
