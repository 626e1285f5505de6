"""Composition root of metering: settings, pool, agreement view, subscriber, usage API."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry
from pydantic import Field

from services.metering.api import build_router
from services.metering.handlers import Meter, MeteringMetrics
from shared.contracts.asyncapi import add_asyncapi_routes, declare_publishers
from shared.contracts.topics import (
    AGREEMENTS,
    METERING_GROUP,
    USAGE_ALERTS,
    WORKITEMS_CLASSIFIED,
    dlq,
)
from shared.infra.agreement_view import agreement_view
from shared.infra.auth import KeyRing, KeySettings
from shared.infra.db import apply_schema, create_pool
from shared.infra.http import (
    SMALL_BODY_BYTES,
    add_operational_routes,
    database_status,
    kafka_status,
    run_service,
)
from shared.infra.kafka import (
    HOT_FETCH_MAX_WAIT_MS,
    HOT_FETCH_MIN_BYTES,
    ensure_service_topics,
    make_broker,
    skip_decoding,
)
from shared.infra.settings import DatabaseSettings, Port

log = logging.getLogger(__name__)


class MeteringSettings(DatabaseSettings, KeySettings):
    metering_port: Port = 8083
    metering_max_batch: Annotated[int, Field(ge=1, le=100_000)] = 5000
    metering_batch_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 50


def create_app(settings: MeteringSettings) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(
        settings.kafka_bootstrap_servers, client_id="tierline-metering", registry=registry
    )
    agreements = agreement_view(settings.kafka_bootstrap_servers, service="metering")
    metrics = MeteringMetrics(registry)
    declare_publishers(broker, USAGE_ALERTS, dlq(WORKITEMS_CLASSIFIED), dlq(AGREEMENTS))
    state: dict[str, Any] = {}

    @broker.subscriber(
        WORKITEMS_CLASSIFIED,
        group_id=METERING_GROUP,
        batch=True,
        max_records=settings.metering_max_batch,
        batch_timeout_ms=settings.metering_batch_timeout_ms,
        fetch_min_bytes=HOT_FETCH_MIN_BYTES,
        fetch_max_wait_ms=HOT_FETCH_MAX_WAIT_MS,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=skip_decoding,
        title="meter",
        description="Counts each (client_id, id) once into PostgreSQL; offsets commit after.",
    )
    async def meter_batch(msg: KafkaMessage) -> None:
        await state["meter"].handle(msg.raw_message)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_service_topics(settings)
        pool = await create_pool(settings.database_url, size=settings.database_pool_size)
        await apply_schema(pool)
        await agreements.start()
        state["pool"] = pool
        state["meter"] = Meter(broker, pool, agreements, metrics)
        app.include_router(build_router(pool, agreements))
        await broker.start()
        log.info("metering ready", extra={"status": "ready"})
        try:
            yield
        finally:
            await broker.stop()  # drains the batch in flight: its transaction and commit finish
            await agreements.stop()
            await pool.close()
            log.info("metering stopped", extra={"status": "stopped"})

    async def health() -> dict[str, Any]:
        return {
            "kafka": await kafka_status(broker),
            "database": await database_status(state.get("pool")),
        }

    app = FastAPI(
        title="Tierline metering",
        version="1",
        lifespan=lifespan,
        description="Exact running counts per client, period and class (SPEC §5).",
    )
    app.state.keys = KeyRing.from_settings(settings)
    add_operational_routes(app, registry=registry, health=health, max_body_bytes=SMALL_BODY_BYTES)
    add_asyncapi_routes(app, broker, title=app.title, description=app.description)
    return app


def main() -> None:
    run_service(
        "metering", MeteringSettings, create_app, port=lambda settings: settings.metering_port
    )
