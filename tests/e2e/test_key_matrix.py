"""The key matrix on the running system (SPEC §2, §13; OWASP API1, broken object-level
authorization): every route of every service, each as its `create_app` builds it, has its rule in
tests/access.py and keeps it over real HTTP against the processes on real Kafka and PostgreSQL.

Two clients, each with a client key, have agreements, items and a closed period with its
invoice. Then: no key or an unknown key is 401 but on the public routes; the intake key is 403
but on posting work items; both admin keys of a rotation are good everywhere else; a client key
is 403 on every write whatever the body (none, malformed, declared over the limit and never
sent) and on the console, reads its own client's documents, is 403 naming the other client (or
one that does not exist) in a path or filter, gets 404 for the other client's invoice, and
lists its own invoices only.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from shared.domain.periods import period_bounds
from tests.access import (
    ITEM_ID,
    Answer,
    Body,
    DeclaredOnly,
    KeySet,
    every_route,
    key_matrix,
    service_apps,
    unruled,
)
from tests.e2e.test_http_limits import exchange, head
from tests.e2e.test_pipeline import last_month
from tests.spec_example import spec_agreement
from tools.supervisor import Stack

RUN = uuid.uuid4().hex[:8]
OWN, OTHER = f"keys-own-{RUN}", f"keys-other-{RUN}"
KEYS = KeySet(
    admin=(f"adm_old_{secrets.token_urlsafe(16)}", f"adm_new_{secrets.token_urlsafe(16)}"),
    intake=f"ik_{secrets.token_urlsafe(16)}",
    clients={OWN: f"ck_{secrets.token_urlsafe(16)}", OTHER: f"ck_{secrets.token_urlsafe(16)}"},
)
TZ = "America/New_York"


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    """The services run with this module's keys: two admin keys, two client keys."""
    return {"env": KEYS.env(), "instances": {}}


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=120) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def closed_period(stack: Stack, http: httpx.AsyncClient) -> str:
    """Both clients with an agreement, items (one of them ITEM_ID), last month closed with an
    invoice each and one item reclassified there (a note each); the period's key."""
    period = last_month()
    start, _ = period_bounds(period, TZ)
    billing, intake = stack.url("billing"), stack.url("intake")
    for client in (OWN, OTHER):
        response = await http.put(
            f"{billing}/v1/agreements/{client}",
            json=spec_agreement(client),
            headers=bearer(KEYS.admin[1]),
        )
        assert response.status_code == 200, response.text
        items = [
            {
                "id": f"item-{n}",
                "client_id": client,
                "source": "jira",
                "completed_at": (start + timedelta(days=1, hours=n)).isoformat(),
                "queue": "Customer Care",
            }
            for n in range(3)
        ]
        assert items[0]["id"] == ITEM_ID
        response = await http.post(
            f"{intake}/v1/work-items", json=items, headers=bearer(KEYS.intake)
        )
        assert response.status_code == 202, response.text
    for client in (OWN, OTHER):
        response = await http.post(
            f"{billing}/v1/periods/{period.key}/close",
            json={"client_id": client},
            headers=bearer(KEYS.admin[0]),
        )
        assert response.status_code == 200, response.text
        assert [i["invoice_id"] for i in response.json()["invoices"]] == [
            f"{client}-{period.key}-1"
        ]
        # A reclassification in the closed period: its note (`<client>-<period>-n1`) and its
        # audit entry are documents of the client too.
        response = await http.post(
            f"{stack.url('metering')}/v1/reclassifications",
            json={
                "id": f"matrix-{client}",
                "client_id": client,
                "period": period.key,
                "match": {"item_ids": [ITEM_ID]},
                "to": {"service_line": "hr", "complexity": "basic"},
                "reason": "the key matrix needs a note",
            },
            headers=bearer(KEYS.admin[0]),
        )
        assert response.status_code == 200, response.text
        assert response.json()["items"] == 1
    return period.key


def over_http(stack: Stack, http: httpx.AsyncClient) -> Any:
    async def send(
        service: str, method: str, target: str, key: str | None, body: Body = None
    ) -> Answer:
        if isinstance(body, DeclaredOnly):
            # Only the head goes out: the service must answer without reading the body.
            assert key is not None
            status, answer, _ = await exchange(
                stack.url(service), head(method, target, key, body.length, "application/json")
            )
            return Answer(status, answer)
        headers = bearer(key) if key is not None else {}
        response = await http.request(
            method, f"{stack.url(service)}{target}", headers=headers, content=body
        )
        try:
            return Answer(response.status_code, response.json())
        except ValueError:
            return Answer(response.status_code)

    return send


async def test_every_route_of_every_service_keeps_its_rule_on_the_running_system(
    stack: Stack, http: httpx.AsyncClient, closed_period: str
) -> None:
    apps = service_apps(KEYS)
    assert not unruled(apps), "a route without a rule in tests/access.py"
    problems = await key_matrix(
        over_http(stack, http),
        every_route(apps),
        KEYS,
        own=OWN,
        other=OTHER,
        period=closed_period,
        with_data=True,
    )
    assert not problems, "\n".join(problems)


async def test_a_client_key_reads_what_the_admin_key_reads_of_its_own_client(
    stack: Stack, http: httpx.AsyncClient, closed_period: str
) -> None:
    """Its own documents are whole: the same usage, agreement and invoices the admin sees."""
    reads = [
        f"{stack.url('metering')}/v1/usage/{OWN}?period={closed_period}",
        f"{stack.url('billing')}/v1/agreements/{OWN}",
        f"{stack.url('billing')}/v1/invoices?client_id={OWN}",
        f"{stack.url('billing')}/v1/invoices/{OWN}-{closed_period}-1",
        f"{stack.url('billing')}/v1/recommendations/{OWN}",
    ]
    for url in reads:
        as_admin = await http.get(url, headers=bearer(KEYS.admin[0]))
        as_client = await http.get(url, headers=bearer(KEYS.clients[OWN]))
        assert as_admin.status_code == 200, (url, as_admin.text)
        assert (as_client.status_code, as_client.json()) == (200, as_admin.json()), url
    usage = (await http.get(reads[0], headers=bearer(KEYS.clients[OWN]))).json()
    assert (usage["items"], usage["status"]) == (3, "closed")
    mine = await http.get(f"{stack.url('billing')}/v1/invoices", headers=bearer(KEYS.clients[OWN]))
    assert [i["invoice_id"] for i in mine.json()["invoices"]] == [f"{OWN}-{closed_period}-1"]
