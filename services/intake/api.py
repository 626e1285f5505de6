"""The intake HTTP route: validate everything, publish everything, then answer 202.

The route reads what it needs through dependencies: `Intake` (metrics and deadlines, set on the
app at construction) and the `Publisher` (the app's BatchProducer, started by the lifespan; a
test overrides the `publisher` dependency)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.intake.openapi import REQUEST_BODY, RESPONSES
from services.intake.parsing import (
    MAX_BYTES,
    InvalidItems,
    RecordTooLarge,
    TooManyItems,
    UnsupportedMediaType,
    client_records,
    encode_records,
    media_type,
    parse_work_items,
)
from shared.contracts.intake import InvalidItemsAnswer
from shared.contracts.topics import WORKITEMS_COMPLETED
from shared.infra.http import IntakeCaller, state_of
from shared.infra.kafka import Publisher

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


@dataclass(frozen=True)
class Intake:
    """What the route needs besides the request, set on the app at construction."""

    publisher: Publisher
    metrics: IntakeMetrics
    #: Seconds the publish of one request may take before it is 503.
    publish_timeout: float
    #: Seconds the body of one request may take to arrive before it is 408.
    body_timeout: float = 30.0


IntakeDep = Annotated[Intake, Depends(state_of(Intake))]


def publisher(intake: IntakeDep) -> Publisher:
    """The dependency that publishes, waiting for every acknowledgement (acks=all: only then
    may intake answer 202): the app's producer, which its lifespan starts."""
    return intake.publisher


PublisherDep = Annotated[Publisher, Depends(publisher)]


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is over `limit`, or TimeoutError when it
    has not all arrived within `timeout` seconds (a stalled sender must not hold intake)."""
    body = bytearray()
    async with asyncio.timeout(timeout):
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
    return bytes(body)


router = APIRouter()
TOO_LARGE: Final = {"detail": f"the body is over {MAX_BYTES} bytes"}


def answer(
    metrics: IntakeMetrics, status: int, body: Any, headers: dict[str, str] | None = None
) -> Response:
    metrics.requests.labels(status=str(status)).inc()
    return JSONResponse(body, status_code=status, headers=headers)


@router.post(
    "/v1/work-items",
    status_code=202,
    summary="Report completed work items",
    responses=RESPONSES,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def post_work_items(
    request: Request, caller: IntakeCaller, intake: IntakeDep, kafka: PublisherDep
) -> Response:
    received_at = datetime.now(UTC)
    metrics, body_timeout = intake.metrics, intake.body_timeout
    try:
        kind = media_type(request.headers.get("content-type"))
    except UnsupportedMediaType as error:
        return answer(
            metrics,
            415,
            {
                "detail": f"unsupported content type {error}; "
                "use application/json or application/x-ndjson"
            },
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BYTES:
        return answer(metrics, 413, TOO_LARGE, headers={"Connection": "close"})
    try:
        body = await read_body(request, limit=MAX_BYTES, timeout=body_timeout)
    except BodyTooLarge:
        return answer(metrics, 413, TOO_LARGE, headers={"Connection": "close"})
    except TimeoutError:
        return answer(
            metrics,
            408,
            {"detail": f"the request body did not arrive within {body_timeout:g} s"},
            headers={"Connection": "close"},
        )
    try:
        records = parse_work_items(
            body, kind, received_at=received_at, key_source=caller.source or ""
        )
        values = encode_records(records)
    except (TooManyItems, RecordTooLarge) as error:
        return answer(metrics, 413, {"detail": str(error)})
    except InvalidItems as error:
        invalid = InvalidItemsAnswer(errors=error.errors)
        return answer(metrics, 422, invalid.model_dump(mode="json"))

    started = time.perf_counter()
    messages = ((WORKITEMS_COMPLETED, key, value) for key, value in client_records(records, values))
    try:
        await asyncio.wait_for(kafka.send_many(messages), intake.publish_timeout)
    except (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError) as error:
        # Kafka refused a record as too large: a retry cannot succeed (SPEC §12: 413).
        log.warning("kafka refused a record as too large", extra={"error": repr(error)})
        return answer(
            metrics, 413, {"detail": "Kafka refused a record of this request as too large"}
        )
    except (KafkaError, TimeoutError, OSError) as error:
        log.warning(
            "kafka could not take the write",
            extra={"items": len(records), "error": repr(error)},
        )
        return answer(
            metrics,
            503,
            {"detail": "Kafka cannot take the write now; retry later"},
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    metrics.publish_seconds.observe(time.perf_counter() - started)
    metrics.items.inc(len(records))
    return answer(metrics, 202, {"accepted": len(records)})
