"""The four services as separate processes against the session's real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from shared.contracts.invoice import InvoiceList
from tools.localinfra import free_port
from tools.supervisor import SERVICES, Stack

BASE_ENV = {
    "LOG_LEVEL": "INFO",
    "BILLING_AUTO_CLOSE_INTERVAL_SECONDS": "5",
    "BILLING_CLOSE_BARRIER_TIMEOUT_SECONDS": "10",
}


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    """Extra environment and instance counts for this module's stack; a module may override."""
    return {"env": {}, "instances": {}}


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    stack_options: dict[str, Any],
) -> Iterator[Stack]:
    ports = {name: free_port() for name in SERVICES}
    logs: Path = tmp_path_factory.mktemp("service-logs")
    with Stack(
        kafka_bootstrap,
        database_url,
        logs,
        ports=ports,
        extra_env={**BASE_ENV, **stack_options["env"]},
        instances=stack_options["instances"],
    ) as running:
        yield running


@pytest.fixture
def run_id() -> str:
    """A suffix that keeps each test's clients apart on a shared broker and database."""
    return uuid.uuid4().hex[:8]


class Api:
    def __init__(self, stack: Stack, http: httpx.AsyncClient) -> None:
        self.stack = stack
        self.http = http
        self.admin = {"Authorization": f"Bearer {stack.admin_key}"}
        self.intake = {"Authorization": f"Bearer {stack.intake_key}"}

    async def put_agreement(self, agreement: dict[str, Any]) -> httpx.Response:
        return await self.http.put(
            f"{self.stack.url('billing')}/v1/agreements/{agreement['client_id']}",
            json=agreement,
            headers=self.admin,
        )

    async def post_items(self, items: list[dict[str, Any]], *, chunk: int = 2000) -> int:
        accepted = 0
        for start in range(0, len(items), chunk):
            response = await self.http.post(
                f"{self.stack.url('intake')}/v1/work-items",
                json=items[start : start + chunk],
                headers=self.intake,
            )
            assert response.status_code == 202, response.text
            accepted += response.json()["accepted"]
        return accepted

    async def close(self, period: str, client_id: str | None = None) -> httpx.Response:
        body = {"client_id": client_id} if client_id else None
        return await self.http.post(
            f"{self.stack.url('billing')}/v1/periods/{period}/close", json=body, headers=self.admin
        )

    async def usage(self, client_id: str, period: str) -> dict[str, Any]:
        response = await self.http.get(
            f"{self.stack.url('metering')}/v1/usage/{client_id}",
            params={"period": period},
            headers=self.admin,
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def invoices(self, **filters: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"{self.stack.url('billing')}/v1/invoices", params=filters, headers=self.admin
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["invoices"]
        # Every invoice served is the contract's document, and reads back unchanged.
        assert InvoiceList.model_validate(response.json()).model_dump(mode="json") == {
            "invoices": found
        }
        return found


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(timeout=120) as http:
        yield Api(stack, http)


async def invoice_events(
    bootstrap: str, ids: set[str], *, timeout: float = 30
) -> dict[str, dict[str, Any]]:
    """Read billing.invoices from the beginning until every id in `ids` has been seen."""
    consumer = AIOKafkaConsumer(
        "billing.invoices",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    found: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(timeout):
            while not ids <= found.keys():
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        event = json.loads(record.value)
                        if event["id"] in ids:
                            assert record.key == event["subject"].encode()
                            found[event["id"]] = event
    finally:
        await consumer.stop()
    return found
