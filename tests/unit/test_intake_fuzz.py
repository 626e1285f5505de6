"""Schemathesis drives intake's route from intake's own OpenAPI document (Kafka replaced by a
recorder, as in test_intake.py): no 5xx, every answer matches the schema documented for its
status, and a body the document calls invalid is refused.

`positive_data_acceptance` is left out: SPEC §2 has rules a JSON schema cannot state (at most
5 minutes in the future, the year in UTC, `2.0` is not an integer), so some schema-valid items
are rightly 422. The suite against the running services is in tests/e2e."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.intake import api as intake_api
from services.intake.app import IntakeSettings, create_app
from tests.unit.test_intake import ADMIN, KEY, Recorder

# The NDJSON body is documented as a string: sent as it is, like text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@contextlib.asynccontextmanager
async def no_kafka(app: FastAPI) -> AsyncIterator[None]:
    yield


def intake_app() -> FastAPI:
    app = create_app(
        IntakeSettings(
            kafka_bootstrap_servers="127.0.0.1:1",
            tierline_admin_key=ADMIN,
            tierline_intake_keys=f"zendesk={KEY}",
        )
    )
    app.router.lifespan_context = no_kafka
    return app


APP = intake_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(autouse=True)
def kafka() -> Iterator[Recorder]:
    recorder = Recorder()
    APP.dependency_overrides[intake_api.publisher] = lambda: recorder
    yield recorder
    APP.dependency_overrides.clear()


@schema.include(path="/v1/work-items").parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_work_items_answer_as_documented(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=[positive_data_acceptance]
    )
