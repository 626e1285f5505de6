"""Composition root of intake: settings, broker and HTTP app. Nothing happens at import."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field

from services.intake.api import Intake, IntakeMetrics, router
from services.intake.parsing import MAX_BYTES
from shared.contracts.asyncapi import add_asyncapi_routes, declare_publishers
from shared.contracts.topics import WORKITEMS_COMPLETED
from shared.infra.auth import KeyRing, KeySettings
from shared.infra.http import (
    health_of,
    run_service,
    service_app,
    set_state,
    start_in,
)
from shared.infra.kafka import BatchProducer, ensure_service_topics, make_broker
from shared.infra.settings import CommonSettings, Port

log = logging.getLogger(__name__)


class IntakeSettings(CommonSettings, KeySettings):
    intake_port: Port = 8081
    intake_publish_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    intake_linger_ms: Annotated[int, Field(ge=0, le=1000)] = 2


def create_app(settings: IntakeSettings) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(
        settings.kafka,
        client_id="tierline-intake",
        registry=registry,
        linger_ms=settings.intake_linger_ms,
    )
    declare_publishers(broker, WORKITEMS_COMPLETED)
    producer = BatchProducer(
        settings.kafka,
        client_id="tierline-intake",
        linger_ms=settings.intake_linger_ms,
    )

    async def start(app: FastAPI, running: AsyncExitStack) -> None:
        await ensure_service_topics(settings)
        # The producer stops first: its stop flushes, and every 202 already had its acks.
        await start_in(running, broker, producer)

    app = service_app(
        "intake",
        description="Takes 'work item completed' events from ticketing systems (SPEC §2).",
        start=start,
        log=log,
        registry=registry,
        health=health_of(broker=broker),
        keys=KeyRing.from_settings(settings),
        routers=[router],
        max_body_bytes=MAX_BYTES,
        body_timeout_seconds=settings.tierline_body_timeout_seconds,
    )
    set_state(
        app,
        Intake(
            publisher=producer,
            metrics=IntakeMetrics(registry),
            publish_timeout=settings.intake_publish_timeout_seconds,
            body_timeout=settings.tierline_body_timeout_seconds,
        ),
    )
    add_asyncapi_routes(app, broker, title=app.title, description=app.description)
    return app


def main() -> None:
    run_service("intake", IntakeSettings, create_app, port=lambda settings: settings.intake_port)
