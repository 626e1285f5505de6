"""Composition root of metering: settings, pool, agreement view, subscriber, the usage, service
level, items and reclassification APIs, and the service-level watch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Annotated

import asyncpg
from aiokafka import ConsumerRecord
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field

from services.metering.api import Ledger, router
from services.metering.handlers import Meter, MeteringMetrics
from services.metering.items_api import ItemReads
from services.metering.items_api import router as items_router
from services.metering.level_watcher import ServiceLevelWatcher
from services.metering.reclassify_api import router as reclassify_router
from services.metering.reclassifying import Reclassifier
from shared.contracts.asyncapi import add_asyncapi_routes, declare_publishers
from shared.contracts.topics import (
    AGREEMENTS,
    METERING_GROUP,
    USAGE_ALERTS,
    WORKITEMS_CLASSIFIED,
    dlq,
)
from shared.domain.agreement.fields import MAX_BODY_BYTES
from shared.infra.agreement_view import agreement_view
from shared.infra.auth import KeyRing, KeySettings
from shared.infra.db import apply_schema, create_pool
from shared.infra.http import (
    get_state,
    health_of,
    run_in,
    run_service,
    service_app,
    set_state,
    start_in,
)
from shared.infra.kafka import ensure_service_topics, make_broker, subscribe_hot_batches
from shared.infra.settings import DatabaseSettings, Port

log = logging.getLogger(__name__)

#: Connections of the items exports' own pool: at most this many exports read at once (others
#: wait their turn), and none of them ever takes a connection the counting needs.
EXPORT_CONNECTIONS = 2


class MeteringSettings(DatabaseSettings, KeySettings):
    metering_port: Port = 8083
    metering_max_batch: Annotated[int, Field(ge=1, le=100_000)] = 5000
    metering_batch_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    #: Consumers of the group in this process, each with one batch in flight (see
    #: shared.infra.kafka.subscribe_hot_batches).
    metering_lanes: Annotated[int, Field(ge=1, le=16)] = 2
    #: How often the open periods that counted items are checked against their service levels.
    metering_service_level_watch_seconds: Annotated[float, Field(gt=0, le=3600)] = 30


def create_app(settings: MeteringSettings) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(settings.kafka, client_id="tierline-metering", registry=registry)
    agreements = agreement_view(settings.kafka, service="metering")
    metrics = MeteringMetrics(registry)
    declare_publishers(broker, USAGE_ALERTS, dlq(WORKITEMS_CLASSIFIED), dlq(AGREEMENTS))

    async def start(app: FastAPI, running: AsyncExitStack) -> None:
        await ensure_service_topics(settings)
        pool = await create_pool(settings.database_url, size=settings.database_pool_size)
        running.push_async_callback(pool.close)
        await apply_schema(pool)
        exports = await create_pool(settings.database_url, size=EXPORT_CONNECTIONS)
        running.push_async_callback(exports.close)
        await start_in(running, agreements)
        set_state(app, Ledger(pool, agreements))
        set_state(app, ItemReads(pool, exports, agreements))
        meter = Meter(broker, pool, agreements, metrics)
        set_state(app, meter)
        set_state(app, Reclassifier(pool, agreements, meter))
        # The broker stops first: it drains the batch in flight (its transaction and commit).
        await start_in(running, broker)
        # Cancelled before that (at shutdown the stack unwinds from the last step back).
        watcher = ServiceLevelWatcher(pool, agreements, meter.level_watch, meter)
        run_in(
            running,
            watcher.run(settings.metering_service_level_watch_seconds),
            name="service-level-watch",
        )

    app = service_app(
        "metering",
        description="Exact running counts per client, period and class (SPEC §5).",
        start=start,
        log=log,
        registry=registry,
        health=health_of(broker=broker, pool=lambda: _pool(app)),
        keys=KeyRing.from_settings(settings),
        routers=[router, items_router, reclassify_router],
        max_body_bytes=MAX_BODY_BYTES,  # a reclassification naming many items
    )

    async def meter_batch(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        meter = get_state(app, Meter)
        assert meter is not None, "the broker starts after the lifespan made the meter"
        await meter.handle(records)

    subscribe_hot_batches(
        broker,
        WORKITEMS_CLASSIFIED,
        group_id=METERING_GROUP,
        max_records=settings.metering_max_batch,
        batch_timeout_ms=settings.metering_batch_timeout_ms,
        lanes=settings.metering_lanes,
        handle=meter_batch,
        title="meter",
        description="Counts each (client_id, id) once into PostgreSQL; offsets commit after.",
    )
    add_asyncapi_routes(app, broker, title=app.title, description=app.description)
    return app


def _pool(app: FastAPI) -> asyncpg.Pool | None:
    ledger = get_state(app, Ledger)
    return ledger.pool if ledger is not None else None


def main() -> None:
    run_service(
        "metering", MeteringSettings, create_app, port=lambda settings: settings.metering_port
    )
