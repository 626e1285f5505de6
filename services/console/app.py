"""Composition root of the console: settings, Kafka watch, pool, the page and its JSON API."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Annotated, Final

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from pydantic import AnyHttpUrl, Field

from services.console.api import STATIC_DIR, Page
from services.console.api import router as page_router
from services.console.business import CachedOverview
from services.console.client import ClientReads
from services.console.client_api import router as client_router
from services.console.deadletters import DeadLetterLog, DeadLetters
from services.console.metering import MeteringItems
from services.console.redrive_api import router as redrive_router
from services.console.redrive_store import apply_redrive_schema
from services.console.watch import KafkaProbe, KafkaWatch
from shared.contracts.topics import (
    ALL_TOPICS,
    CLASSIFIER_GROUP,
    CONSUMED_TOPICS,
    METERING_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
    dlq,
)
from shared.infra.auth import KeyRing, KeySettings
from shared.infra.db import apply_schema, create_pool
from shared.infra.http import (
    SMALL_BODY_BYTES,
    database_status,
    get_state,
    run_in,
    run_service,
    service_app,
    set_state,
    start_in,
)
from shared.infra.kafka import ensure_service_topics
from shared.infra.settings import DatabaseSettings, Port

log = logging.getLogger(__name__)

#: The consumer groups of the pipeline and what each consumes.
GROUPS: Final = {
    CLASSIFIER_GROUP: (WORKITEMS_COMPLETED,),
    METERING_GROUP: (WORKITEMS_CLASSIFIED,),
}
DEAD_LETTER_TOPICS: Final = tuple(dlq(topic) for topic in CONSUMED_TOPICS)
WATCHED_TOPICS: Final = (*ALL_TOPICS, *DEAD_LETTER_TOPICS)


class ConsoleSettings(DatabaseSettings, KeySettings):
    console_port: Port = 8085
    console_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 2
    console_history_seconds: Annotated[float, Field(ge=10, le=86_400)] = 600
    console_dead_letters_shown: Annotated[int, Field(ge=1, le=500)] = 20
    console_invoices_shown: Annotated[int, Field(ge=1, le=500)] = 20
    database_pool_size: Annotated[int, Field(ge=1, le=100)] = 2
    #: Metering's HTTP API: the pages' item reads are forwarded there with the caller's key.
    console_metering_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8083")
    console_metering_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5


def create_app(settings: ConsoleSettings) -> FastAPI:
    registry = CollectorRegistry()
    watch = KafkaWatch(
        KafkaProbe(settings.kafka, topics=WATCHED_TOPICS, groups=list(GROUPS)),
        groups=GROUPS,
        dead_letter_topics=DEAD_LETTER_TOPICS,
        interval=settings.console_poll_seconds,
        history_seconds=settings.console_history_seconds,
        dead_letters_shown=settings.console_dead_letters_shown,
        registry=registry,
    )

    async def start(app: FastAPI, running: AsyncExitStack) -> None:
        await ensure_service_topics(settings)
        pool = await create_pool(settings.database_url, size=settings.database_pool_size)
        running.push_async_callback(pool.close)
        await apply_schema(pool)  # the tables it reads exist even before metering/billing start
        await apply_redrive_schema(pool)  # ops.redrives: the one table the console writes
        dead_letter_log = DeadLetterLog(settings.kafka)
        await start_in(running, dead_letter_log)
        set_state(app, DeadLetters(dead_letter_log, pool, registry))
        business = CachedOverview(
            pool,
            invoices_shown=settings.console_invoices_shown,
            ttl=settings.console_poll_seconds / 2,
        )
        set_state(
            app,
            Page(watch, business, topics=ALL_TOPICS, poll_seconds=settings.console_poll_seconds),
        )
        set_state(app, ClientReads(pool, invoices_shown=settings.console_invoices_shown))
        metering = MeteringItems(
            str(settings.console_metering_url),
            timeout_seconds=settings.console_metering_timeout_seconds,
        )
        await start_in(running, metering)
        set_state(app, metering)
        running.push_async_callback(watch.probe.close)
        await watch.poll_once()
        run_in(running, watch.run(), name="kafka-watch")

    async def health() -> dict[str, str]:
        page = get_state(app, Page)
        return {
            "kafka": "ok" if watch.error is None and watch.history.latest else "unavailable",
            "database": await database_status(page.business.pool if page is not None else None),
        }

    app = service_app(
        "console",
        description=(
            "The operator page: topics, consumer lag, dead letters, usage, review queues and "
            "invoices, live; and the client page: a client's usage, tier ladder, invoices, "
            "notes and items, for its own key."
        ),
        start=start,
        log=log,
        registry=registry,
        health=health,
        keys=KeyRing.from_settings(settings),
        routers=[page_router, client_router, redrive_router],
        max_body_bytes=SMALL_BODY_BYTES,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def main() -> None:
    run_service("console", ConsoleSettings, create_app, port=lambda settings: settings.console_port)
