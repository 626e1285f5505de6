"""Composition root of the classifier: settings, broker, agreement view, subscriber, HTTP side."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import FastAPI
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
from shared.infra.http import (
    SMALL_BODY_BYTES,
    health_of,
    run_service,
    service_app,
    start_in,
)
from shared.infra.kafka import (
    BatchProducer,
    ensure_service_topics,
    make_broker,
    subscribe_hot_batches,
)
from shared.infra.settings import CommonSettings, Port

log = logging.getLogger(__name__)


class ClassifierSettings(CommonSettings):
    classifier_port: Port = 8082
    classifier_max_batch: Annotated[int, Field(ge=1, le=100_000)] = 2000
    classifier_batch_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    #: Consumers of the group in this process, each with one batch in flight (see
    #: shared.infra.kafka.subscribe_hot_batches).
    classifier_lanes: Annotated[int, Field(ge=1, le=16)] = 2


def create_app(settings: ClassifierSettings) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(settings.kafka, client_id="tierline-classifier", registry=registry)
    agreements = agreement_view(settings.kafka, service="classifier")
    producer = BatchProducer(settings.kafka, client_id="tierline-classifier")
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
    subscribe_hot_batches(
        broker,
        WORKITEMS_COMPLETED,
        group_id=CLASSIFIER_GROUP,
        max_records=settings.classifier_max_batch,
        batch_timeout_ms=settings.classifier_batch_timeout_ms,
        lanes=settings.classifier_lanes,
        handle=classifier.handle,
        title="classify",
        description="Tags each completed work item with its class by the client's agreement rules.",
    )

    async def start(app: FastAPI, running: AsyncExitStack) -> None:
        await ensure_service_topics(settings)
        # The broker stops first: it drains the batch in flight and commits it.
        await start_in(running, agreements, producer, broker)

    app = service_app(
        "classifier",
        description="Classifies work items by each client's agreement rules (SPEC §4).",
        start=start,
        log=log,
        registry=registry,
        health=health_of(broker=broker),
        max_body_bytes=SMALL_BODY_BYTES,
    )
    add_asyncapi_routes(app, broker, title=app.title, description=app.description)
    return app


def main() -> None:
    run_service(
        "classifier", ClassifierSettings, create_app, port=lambda settings: settings.classifier_port
    )
