"""Composition root of the classifier: settings, broker, agreement view, subscriber, HTTP side."""

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

from services.classifier.handlers import Classifier, ClassifierMetrics
from shared.contracts.asyncapi import add_asyncapi_routes, declare_publishers
from shared.contracts.topics import (
    AGREEMENTS,
    CLASSIFIER_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
    WORKITEMS_UNCLASSIFIED,
    dlq,
)
from shared.infra.agreement_view import agreement_view
from shared.infra.http import SMALL_BODY_BYTES, add_operational_routes, kafka_status, run_service
from shared.infra.kafka import (
    HOT_FETCH_MAX_WAIT_MS,
    HOT_FETCH_MIN_BYTES,
    BatchProducer,
    ensure_service_topics,
    make_broker,
    skip_decoding,
)
from shared.infra.settings import CommonSettings, Port

log = logging.getLogger(__name__)


class ClassifierSettings(CommonSettings):
    classifier_port: Port = 8082
    classifier_max_batch: Annotated[int, Field(ge=1, le=100_000)] = 2000
    classifier_batch_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 50


def create_app(settings: ClassifierSettings) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(
        settings.kafka_bootstrap_servers, client_id="tierline-classifier", registry=registry
    )
    agreements = agreement_view(settings.kafka_bootstrap_servers, service="classifier")
    producer = BatchProducer(settings.kafka_bootstrap_servers, client_id="tierline-classifier")
    classifier = Classifier(
        broker=broker,
        producer=producer,
        agreements=agreements,
        metrics=ClassifierMetrics(registry),
    )
    declare_publishers(
        broker,
        WORKITEMS_CLASSIFIED,
        WORKITEMS_UNCLASSIFIED,
        dlq(WORKITEMS_COMPLETED),
        dlq(AGREEMENTS),  # written by the agreement view: records it cannot use
    )

    @broker.subscriber(
        WORKITEMS_COMPLETED,
        group_id=CLASSIFIER_GROUP,
        batch=True,
        max_records=settings.classifier_max_batch,
        batch_timeout_ms=settings.classifier_batch_timeout_ms,
        fetch_min_bytes=HOT_FETCH_MIN_BYTES,
        fetch_max_wait_ms=HOT_FETCH_MAX_WAIT_MS,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=skip_decoding,
        title="classify",
        description="Tags each completed work item with its class by the client's agreement rules.",
    )
    async def classify_batch(msg: KafkaMessage) -> None:
        await classifier.handle(msg.raw_message)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_service_topics(settings)
        await agreements.start()
        await producer.start()
        await broker.start()
        log.info("classifier ready", extra={"status": "ready"})
        try:
            yield
        finally:
            await broker.stop()  # drains the batch in flight and commits it
            await producer.stop()
            await agreements.stop()
            log.info("classifier stopped", extra={"status": "stopped"})

    async def health() -> dict[str, Any]:
        return {"kafka": await kafka_status(broker)}

    app = FastAPI(
        title="Tierline classifier",
        version="1",
        lifespan=lifespan,
        description="Classifies work items by each client's agreement rules (SPEC §4).",
    )
    add_operational_routes(app, registry=registry, health=health, max_body_bytes=SMALL_BODY_BYTES)
    add_asyncapi_routes(app, broker, title=app.title, description=app.description)
    return app


def main() -> None:
    run_service(
        "classifier", ClassifierSettings, create_app, port=lambda settings: settings.classifier_port
    )
