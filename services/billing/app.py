"""Composition root of billing: settings, pool, producer, HTTP API and background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field

from services.billing import api, insight_api
from services.billing.deps import Billing
from services.billing.service import BillingMetrics, BillingService, utcnow
from shared.contracts.asyncapi import add_asyncapi_routes, declare_publishers
from shared.contracts.topics import AGREEMENTS, INVOICES
from shared.infra.auth import KeyRing, KeySettings
from shared.infra.db import apply_schema, create_pool
from shared.infra.http import add_operational_routes, database_status, kafka_status, run_service
from shared.infra.kafka import CompactedView, ensure_service_topics, make_broker
from shared.infra.settings import DatabaseSettings, Port

log = logging.getLogger(__name__)


class BillingSettings(DatabaseSettings, KeySettings):
    billing_port: Port = 8084
    billing_auto_close: bool = True
    billing_close_grace_hours: Annotated[float, Field(ge=0, le=24 * 366)] = 72
    billing_auto_close_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 30
    billing_close_barrier_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30
    billing_outbox_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 2
    billing_reconcile_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60


async def _every(seconds: float, what: str, work: Callable[[], Awaitable[Any]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception as error:  # a background pass must never die: the next one retries
            log.warning(f"{what} failed; will retry", extra={"error": repr(error)})


def create_app(settings: BillingSettings) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(
        settings.kafka_bootstrap_servers, client_id="tierline-billing", registry=registry
    )
    declare_publishers(broker, AGREEMENTS, INVOICES)
    #: What the `agreements` topic carries now (raw), to republish what it no longer does.
    on_topic: CompactedView[bytes] = CompactedView(
        settings.kafka_bootstrap_servers, AGREEMENTS, bytes
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_service_topics(settings)
        pool = await create_pool(settings.database_url, size=settings.database_pool_size)
        await apply_schema(pool)
        await broker.start()
        service = BillingService(
            pool=pool,
            broker=broker,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            barrier_timeout=settings.billing_close_barrier_timeout_seconds,
            metrics=BillingMetrics(registry),
        )
        app.state.billing = Billing(service=service, pool=pool)
        try:  # whatever a crash left unpublished; a row Kafka refuses never stops the start
            await service.publish_outbox()
        except Exception as error:  # the outbox loop below retries
            log.warning("outbox at start failed; will retry", extra={"error": repr(error)})
        await on_topic.start()
        tasks = [
            asyncio.create_task(
                _every(settings.billing_outbox_interval_seconds, "outbox", service.publish_outbox)
            ),
            asyncio.create_task(
                _every(
                    settings.billing_reconcile_interval_seconds,
                    "agreements reconcile",
                    lambda: service.reconcile_agreements(on_topic),
                )
            ),
        ]
        if settings.billing_auto_close:
            tasks.append(
                asyncio.create_task(
                    _every(
                        settings.billing_auto_close_interval_seconds,
                        "auto-close",
                        lambda: service.auto_close(
                            now=utcnow(), grace_hours=settings.billing_close_grace_hours
                        ),
                    )
                )
            )
        log.info("billing ready", extra={"status": "ready"})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await on_topic.stop()
            await broker.stop()
            await pool.close()
            log.info("billing stopped", extra={"status": "stopped"})

    async def health() -> dict[str, Any]:
        running = getattr(app.state, "billing", None)
        pool = running.pool if isinstance(running, Billing) else None
        return {"kafka": await kafka_status(broker), "database": await database_status(pool)}

    app = FastAPI(
        title="Tierline billing",
        version="1",
        description="Agreements, period close, tier decision and invoices (SPEC §3, §6, §7).",
        lifespan=lifespan,
    )
    app.state.keys = KeyRing.from_settings(settings)
    app.include_router(api.router)
    app.include_router(insight_api.router)
    add_operational_routes(app, registry=registry, health=health)
    add_asyncapi_routes(app, broker, title=app.title, description=app.description)
    return app


def main() -> None:
    run_service("billing", BillingSettings, create_app, port=lambda settings: settings.billing_port)
