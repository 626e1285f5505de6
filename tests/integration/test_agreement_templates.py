"""Agreement templates on billing as it runs (SPEC §3 "Templates", §13): billing's own app, its
lifespan on a real Kafka and PostgreSQL, served over HTTP. Every listed template is fetched
and PUT for a client of its own with nothing but `client_id` added, and comes back as that
client's agreement; only the admin key reads templates. Then `tierline agreements` does the
same round trip from the command line against it.

Billing's background loops are slowed and auto-close is off: this billing must not close the
periods of the session's other clients.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from services.billing.app import BillingSettings, create_app
from shared.infra.kafka import ensure_topics
from shared.infra.kafka_connection import KafkaConnection
from tests.unit.test_agreements_cli import parse
from tools.agreements_cli import run
from tools.localinfra.processes import free_port

ADMIN = "templates-admin-key-0123456789"
INTAKE = "templates-intake-key-0123456789"


@pytest.fixture(scope="module")
async def billing_url(
    kafka_bootstrap: str, kafka: KafkaConnection, database_url: str
) -> AsyncIterator[str]:
    """Billing's app, lifespan and all, served by uvicorn on a free port of this loop."""
    await ensure_topics(kafka, partitions=6)
    settings = BillingSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        tierline_admin_key=ADMIN,
        tierline_intake_keys=f"zendesk={INTAKE}",
        billing_auto_close=False,
        billing_outbox_interval_seconds=3600,
        billing_reconcile_interval_seconds=3600,
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():  # it failed to start: say why
            serving.result()
            raise RuntimeError("billing stopped before it started")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def admin(billing_url: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=billing_url, headers=headers, timeout=60) as http:
        yield http


async def test_every_template_is_listed_fetched_and_put_for_a_client(
    admin: httpx.AsyncClient,
) -> None:
    listed = await admin.get("/v1/agreement-templates")
    assert listed.status_code == 200, listed.text
    entries = listed.json()["templates"]
    names = [entry["name"] for entry in entries]
    assert names == sorted(names)
    assert {"healthcare", "banking", "insurance", "retail", "telecom", "logistics"} <= set(names)

    tag = uuid.uuid4().hex[:6]
    for name in names:
        fetched = await admin.get(f"/v1/agreement-templates/{name}")
        assert fetched.status_code == 200, fetched.text
        body = fetched.json()
        assert "client_id" not in body
        client_id = f"tpl-{name}-{tag}"
        put = await admin.put(f"/v1/agreements/{client_id}", json={**body, "client_id": client_id})
        assert put.status_code == 200, (name, put.text)
        assert put.json()["version"] == 1
        current = await admin.get(f"/v1/agreements/{client_id}")
        assert current.json() == {**body, "client_id": client_id, "version": 1}

    unknown = await admin.get("/v1/agreement-templates/aerospace")
    assert unknown.status_code == 404
    bad = await admin.get("/v1/agreement-templates/Health_Care")
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["path", "name"]


@pytest.mark.parametrize("path", ["/v1/agreement-templates", "/v1/agreement-templates/retail"])
async def test_templates_take_the_admin_key_only(billing_url: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=billing_url, timeout=60) as http:
        assert (await http.get(path)).status_code == 401
        intake = await http.get(path, headers={"Authorization": f"Bearer {INTAKE}"})
        assert intake.status_code == 403


async def test_the_cli_lists_writes_applies_and_shows_against_billing(
    billing_url: str, tmp_path: Path
) -> None:
    env = {"TIERLINE_ADMIN_KEY": ADMIN, "TIERLINE_BILLING_URL": billing_url}
    client_id = f"tpl-cli-{uuid.uuid4().hex[:6]}"
    target = tmp_path / "agreement.yaml"

    async def cli(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        # The CLI is synchronous: it runs in a thread while this loop serves billing.
        status = await asyncio.to_thread(run, parse(*argv), out=out, err=err, environ=env)
        return status, out.getvalue(), err.getvalue()

    status, out, _ = await cli("templates")
    assert status == 0 and out.splitlines()[0].split() == ["NAME", "INDUSTRY", "DESCRIPTION"]
    assert any(line.startswith("insurance ") for line in out.splitlines())

    status, _, _ = await cli("templates", "insurance", "--client", client_id, "-o", str(target))
    assert status == 0 and yaml.safe_load(target.read_text())["client_id"] == client_id
    assert await cli("apply", str(target)) == (0, f"agreement {client_id} version 1\n", "")

    target.write_text(target.read_text().replace("fee: '32000.00'", "fee: '32000.001'"))
    status, _, err = await cli("apply", str(target))
    assert status == 1
    assert f"billing refused the agreement of {client_id} (422):" in err
    assert "pricing.tiers.0.fee: has 3 decimal places; USD allows at most 2" in err

    status, out, _ = await cli("show", client_id)
    assert status == 0 and out.splitlines()[0] == f"# {client_id}: version 1"
    shown = yaml.safe_load(out)
    assert (shown["client_id"], shown["version"], shown["pricing"]["tiers"][0]["fee"]) == (
        client_id, 1, "32000.00",
    )  # fmt: skip
