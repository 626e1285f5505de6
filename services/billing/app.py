"""Composition root of billing: settings, pool, producer, HTTP API and background loops."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field, model_validator

from services.billing import api, insight_api, notes_api, templates_api
from services.billing.deps import Billing
from services.billing.service import BillingMetrics, BillingService, utcnow
from services.billing.template_catalog import TemplateError
from shared.contracts.asyncapi import add_asyncapi_routes, declare_publishers
from shared.contracts.topics import AGREEMENTS, INVOICES
from shared.infra.auth import KeyRing, KeySettings
from shared.infra.db import apply_schema, create_pool, on_notification
from shared.infra.http import (
    get_state,
    health_of,
    run_in,
    run_service,
    service_app,
    set_state,
    start_in,
)
from shared.infra.kafka import CompactedView, ensure_service_topics, make_broker
from shared.infra.settings import DatabaseSettings, Port
from shared.ledger.reads import NOTES_CHANNEL

log = logging.getLogger(__name__)


class BillingSettings(DatabaseSettings, KeySettings):
    billing_port: Port = 8084
    billing_auto_close: bool = True
    billing_close_grace_hours: Annotated[float, Field(ge=0, le=24 * 366)] = 72
    billing_auto_close_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 30
    billing_close_barrier_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30
    billing_outbox_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 2
    billing_reconcile_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60
    #: Notes are issued when metering says one is owed (LISTEN), and at least this often.
    billing_notes_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 5
    #: Clients one close works on at once (each in its own transaction, under its own lock).
    billing_close_concurrency: Annotated[int, Field(ge=1, le=32)] = 4

    @model_validator(mode="after")
    def _pool_holds_the_closes(self) -> BillingSettings:
        if self.billing_close_concurrency >= self.database_pool_size:
            raise ValueError(
                f"BILLING_CLOSE_CONCURRENCY ({self.billing_close_concurrency}) must be below "
                f"DATABASE_POOL_SIZE ({self.database_pool_size}): the API and the outbox need "
                "connections while a close runs"
            )
        return self


async def _every(seconds: float, what: str, work: Callable[[], Awaitable[Any]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception as error:  # a background pass must never die: the next one retries
            log.warning(f"{what} failed; will retry", extra={"error": repr(error)})


def create_app(settings: BillingSettings) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(settings.kafka, client_id="tierline-billing", registry=registry)
    declare_publishers(broker, AGREEMENTS, INVOICES)
    #: What the `agreements` topic carries now (raw), to republish what it no longer does.
    on_topic: CompactedView[bytes] = CompactedView(settings.kafka, AGREEMENTS, bytes)

    async def start(app: FastAPI, running: AsyncExitStack) -> None:
        await ensure_service_topics(settings)
        pool = await create_pool(settings.database_url, size=settings.database_pool_size)
        running.push_async_callback(pool.close)
        await apply_schema(pool)
        await start_in(running, broker)
        service = BillingService(
            pool=pool,
            broker=broker,
            kafka=settings.kafka,
            barrier_timeout=settings.billing_close_barrier_timeout_seconds,
            metrics=BillingMetrics(registry),
            close_concurrency=settings.billing_close_concurrency,
        )
        set_state(app, Billing(service=service, pool=pool))
        try:  # whatever a crash left unpublished; a row Kafka refuses never stops the start
            await service.publish_outbox()
        except Exception as error:  # the outbox loop below retries
            log.warning("outbox at start failed; will retry", extra={"error": repr(error)})
        await start_in(running, on_topic)
        # The loops are cancelled first at shutdown, before what they use stops.
        run_in(
            running,
            _every(settings.billing_outbox_interval_seconds, "outbox", service.publish_outbox),
            name="outbox",
        )
        run_in(
            running,
            on_notification(
                settings.database_url,
                NOTES_CHANNEL,
                service.issue_notes,
                every=settings.billing_notes_interval_seconds,
                what="notes",
            ),
            name="notes",
        )
        run_in(
            running,
            _every(
                settings.billing_reconcile_interval_seconds,
                "agreements reconcile",
                lambda: service.reconcile_agreements(on_topic),
            ),
            name="agreements-reconcile",
        )
        if settings.billing_auto_close:
            run_in(
                running,
                _every(
                    settings.billing_auto_close_interval_seconds,
                    "auto-close",
                    lambda: service.auto_close(
                        now=utcnow(), grace_hours=settings.billing_close_grace_hours
                    ),
                ),
                name="auto-close",
            )

    app = service_app(
        "billing",
        description="Agreements, period close, tier decision and invoices (SPEC §3, §6, §7).",
        start=start,
        log=log,
        registry=registry,
        health=health_of(broker=broker, pool=lambda: _pool(app)),
        keys=KeyRing.from_settings(settings),
        routers=[api.router, insight_api.router, notes_api.router, templates_api.router],
    )
    set_state(app, templates_api.read_catalog())  # a broken template stops billing, naming it
    add_asyncapi_routes(app, broker, title=app.title, description=app.description)
    return app


def _pool(app: FastAPI) -> asyncpg.Pool | None:
    running = get_state(app, Billing)
    return running.pool if running is not None else None


def main() -> None:
    try:
        run_service(
            "billing", BillingSettings, create_app, port=lambda settings: settings.billing_port
        )
    except TemplateError as error:  # raised while the app is built, before it serves
        print(f"configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
