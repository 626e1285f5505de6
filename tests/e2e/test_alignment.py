"""Alignment end to end (SPEC §10) on real Kafka and PostgreSQL, the four services as processes:
a whole dispute (items metered and billed, the client reads its items with its own key, the
provider reclassifies some in the closed period, a note is issued and published, late items
arrive and the next close's late adjustment accounts for the note), and the review queue of an
open period resolved by a reclassification — every amount to the cent."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.domain.periods import Period, period_bounds
from tests.e2e.conftest import Api, invoice_events
from tests.e2e.test_billing_rules import read_topic
from tests.e2e.test_pipeline import last_month
from tests.spec_example import spec_body

#: This module's clients, each with a client key of its own (SPEC §2).
SUFFIX = uuid.uuid4().hex[:8]
DISPUTE, QUEUE, OTHER = f"dispute-{SUFFIX}", f"queue-{SUFFIX}", f"other-{SUFFIX}"
CLIENT_KEYS = {
    client: f"client-key-{client}-{uuid.uuid4().hex}" for client in (DISPUTE, QUEUE, OTHER)
}


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    keys = ",".join(f"{client}={key}" for client, key in CLIENT_KEYS.items())
    return {"env": {"TIERLINE_CLIENT_KEYS": keys}, "instances": {}}


def as_client(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENT_KEYS[client]}"}


def batch(
    client: str, prefix: str, count: int, period: Period, **fields: Any
) -> list[dict[str, Any]]:
    """`count` items spread over the period (in the agreement's zone, New York), up to now."""
    start, end = period_bounds(period, "America/New_York")
    end = min(end, datetime.now(UTC) - timedelta(minutes=1))
    step = (end - start) / (count + 1)
    return [
        {
            "id": f"{prefix}-{n:05d}",
            "client_id": client,
            "source": "servicenow",
            "completed_at": (start + step * (n + 1)).isoformat(),
            **fields,
        }
        for n in range(count)
    ]


def dispute_agreement(client: str) -> dict[str, Any]:
    """SPEC §3's example, with queue rules for the workload besides its own two rules."""
    body = spec_body(client)
    body["classification"]["rules"] += [
        {
            "id": "care",
            "when": {"queue": "Care"},
            "then": {"service_line": "customer_support", "complexity": "basic"},
        },
        {
            "id": "keying",
            "when": {"queue": "Keying"},
            "then": {"service_line": "data_entry", "complexity": "standard"},
        },
    ]
    return body


async def metered(api: Api, client: str, period: Period, count: int) -> dict[str, Any]:
    """The period's usage once metering has counted `count` items (classified or not)."""
    async with asyncio.timeout(60):
        while True:
            usage = await api.usage(client, period.key)
            if usage["items"] + usage["unclassified_items"] >= count:
                return usage
            await asyncio.sleep(0.2)


def lines(invoice_or_note: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (line["kind"], line.get("period"), line["quantity"], line["unit_price"], line["amount"])
        for line in invoice_or_note["lines"]
    ]


async def reclassify(api: Api, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await api.http.post(
        f"{api.stack.url('metering')}/v1/reclassifications",
        json=body,
        headers=headers or api.admin,
    )


async def get(api: Api, service: str, path: str, client: str | None = None, **params: Any) -> Any:
    response = await api.http.get(
        f"{api.stack.url(service)}{path}",
        params=params,
        headers=as_client(client) if client else api.admin,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_whole_dispute_to_the_cent(api: Api) -> None:
    period = last_month()
    client = DISPUTE
    assert (await api.put_agreement(dispute_agreement(client))).status_code == 200

    # SPEC §6 example 3: 600 care + 150 keying + 12 large AP invoices → Enterprise (scope).
    ap = batch(client, "AP", 12, period, queue="AP Invoices", units=25, handling_seconds=5400)
    await api.post_items(
        batch(client, "care", 600, period, queue="Care")
        + batch(client, "key", 150, period, queue="Keying")
        + ap
    )
    [invoice] = (await api.close(period.key, client)).json()["invoices"]
    assert invoice["tier"] == {"name": "Enterprise", "reason": "scope"}
    assert invoice["total"] == "90000.00"

    # The client reads its items with its own key, and sees which rule placed each.
    listed = await get(
        api, "metering", "/v1/items", client, period=period.key, rule_id="ap-invoices-large"
    )
    assert [i["id"] for i in listed["items"]] == [i["id"] for i in ap]
    first = listed["items"][0]
    assert (first["service_line"], first["complexity"], first["weighted_units"]) == (
        "accounting",
        "complex",
        "5",
    )
    assert (first["units"], first["handling_seconds"], first["late"]) == (25, 5400, False)
    assert (first["period"], first["status"], first["history"]) == (period.key, "classified", [])
    # ... only its own: another client's items are 403, even by a filter.
    other = await api.http.get(
        f"{api.stack.url('metering')}/v1/items",
        params={"client_id": OTHER, "period": period.key},
        headers=as_client(client),
    )
    assert other.status_code == 403
    # ... and it cannot correct anything itself.
    dispute = {
        "id": f"rc-{SUFFIX}-42",
        "client_id": client,
        "period": period.key,
        "match": {"rule_id": "ap-invoices-large", "status": "classified"},
        "to": {"service_line": "accounting", "complexity": "standard"},
        "reason": "client dispute #42: these invoices had under 20 lines",
    }
    assert (await reclassify(api, dispute, **as_client(client))).status_code == 403

    # The provider corrects them: accounting/standard is in Professional's scope → 35000.00.
    response = await reclassify(api, dispute)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {
        "id": dispute["id"],
        "client_id": client,
        "period": period.key,
        "items": 12,
        "moved": [
            {
                "from": {"service_line": "accounting", "complexity": "complex"},
                "to": {"service_line": "accounting", "complexity": "standard"},
                "items": 12,
                "units": 300,
                "weighted_units": "24",
            }
        ],
        "period_status": "closed",
    }
    # Again with the same body: the same answer, nothing moved twice, no second note.
    assert (await reclassify(api, dispute)).json() == answer
    assert (await reclassify(api, {**dispute, "reason": "another"})).status_code == 409

    # The note: re-rated now (35000.00) minus everything billed (90000.00).
    notes = (await get(api, "billing", "/v1/notes", client))["notes"]
    assert [n["note_id"] for n in notes] == [f"{client}-{period.key}-n1"]
    [note] = notes
    assert (note["invoice_id"], note["currency"], note["reclassification"]) == (
        invoice["invoice_id"],
        "USD",
        dispute["id"],
    )
    assert note["reason"] == f"reclassification {dispute['id']}: {dispute['reason']}"
    assert lines(note) == [("adjustment", None, "1", "-55000.00", "-55000.00")]
    assert note["total"] == "-55000.00"
    assert await get(api, "billing", f"/v1/notes/{note['note_id']}", client) == note
    events = await invoice_events(api.stack.kafka_bootstrap, {note["note_id"]})
    event = events[note["note_id"]]
    assert (event["type"], event["subject"], event["data"]) == (
        "bpo.invoice.adjusted",
        client,
        note,
    )
    # Another client's key does not see it (404, as if unknown).
    foreign = await api.http.get(
        f"{api.stack.url('billing')}/v1/notes/{note['note_id']}", headers=as_client(OTHER)
    )
    assert foreign.status_code == 404

    # The item shows its new class and its history; the audit trail names who and why.
    item = await get(api, "metering", f"/v1/items/{client}/{ap[0]['id']}", client)
    assert (item["complexity"], item["rule_id"], item["weighted_units"]) == (
        "standard",
        f"reclassification:{dispute['id']}",
        "2",
    )
    [change] = item["history"]
    assert (change["from"], change["to"], change["reclassification"], change["reason"]) == (
        {"service_line": "accounting", "complexity": "complex"},
        {"service_line": "accounting", "complexity": "standard"},
        dispute["id"],
        dispute["reason"],
    )
    [audit] = (await get(api, "metering", "/v1/reclassifications", client_id=client))[
        "reclassifications"
    ]
    admin = hashlib.sha256(api.stack.admin_key.encode()).hexdigest()[:8]
    assert (audit["made_by"], audit["body"], audit["moved"]) == (
        f"admin:{admin}",
        dispute,
        answer["moved"],
    )
    # The closed period keeps its invoice's tier; its counts follow the correction.
    usage = await api.usage(client, period.key)
    assert (usage["status"], usage["tier"]) == ("closed", {"name": "Enterprise", "reason": "scope"})
    assert usage["weighted_units"] == "924"

    # Late items: W = 924 + 4200 = 5124 → Enterprise by volume = 90000.00. Billed so far:
    # 90000.00 − 55000.00 = 35000.00, so the late adjustment is 55000.00 (without the note's
    # share in what was billed, it would wrongly be 0.00).
    await api.post_items(batch(client, "late", 4200, period, queue="Care"))
    current = period.next()
    [following] = (await api.close(current.key, client)).json()["invoices"]
    assert lines(following) == [
        ("tier_fee", None, "1", "10000.00", "10000.00"),
        ("late_adjustment", period.key, "1", "55000.00", "55000.00"),
    ]
    assert following["total"] == "65000.00"
    assert (await api.invoices(client_id=client, period=period.key)) == [invoice]


async def test_the_review_queue_is_resolved_by_a_reclassification(api: Api) -> None:
    period = last_month().next()  # the open period
    client = QUEUE
    body = dispute_agreement(client)
    del body["classification"]["default"]  # what the rules cannot place stays unclassified
    assert (await api.put_agreement(body)).status_code == 200
    await api.post_items(
        batch(client, "care", 20, period, queue="Care")
        + batch(client, "odd", 11, period, queue="Master records")
    )
    usage = await metered(api, client, period, 31)
    assert (usage["items"], usage["unclassified_items"]) == (20, 11)
    assert usage["tier"] == {"name": "Essential", "reason": "volume"}

    queue = await get(
        api, "metering", "/v1/items", client, period=period.key, status="unclassified"
    )
    assert len(queue["items"]) == 11
    assert {(i["service_line"], i["rule_id"], i["weighted_units"]) for i in queue["items"]} == {
        (None, None, "0")
    }

    # A new rule places them; classifying the queue again with the rules moves them there.
    body["classification"]["rules"].append(
        {
            "id": "vendor-master",
            "when": {"queue": {"regex": "(?i)master records"}},
            "then": {"service_line": "procurement", "complexity": "complex"},
        }
    )
    stored = await api.put_agreement(body)
    version = stored.json()["version"]
    resolve = {
        "id": f"queue-{SUFFIX}",
        "client_id": client,
        "period": period.key,
        "match": {"status": "unclassified"},
        "to": "rules",
        "reason": "master records upkeep is procurement work",
    }
    response = await reclassify(api, resolve)
    assert response.status_code == 200, response.text
    assert response.json()["moved"] == [
        {
            "from": None,
            "to": {"service_line": "procurement", "complexity": "complex"},
            "items": 11,
            "units": 11,
            "weighted_units": "55",
        }
    ]
    assert response.json()["period_status"] == "open"

    # The counts, the usage and the alerts follow in the same transaction: procurement/complex
    # has 11 ≥ 10 items, only Enterprise covers it → scope moves the period to Enterprise.
    usage = await api.usage(client, period.key)
    assert (usage["items"], usage["unclassified_items"], usage["weighted_units"]) == (31, 0, "75")
    assert usage["tier"] == {"name": "Enterprise", "reason": "scope"}
    alerts = await read_topic(
        api.stack.kafka_bootstrap, "usage.alerts", {client.encode()}, 1, timeout=15
    )
    assert [(a["data"]["threshold"], a["data"]["tier"]) for a in alerts] == [
        ("scope", "Enterprise")
    ]
    placed = await get(
        api, "metering", "/v1/items", client, period=period.key, rule_id="vendor-master"
    )
    assert len(placed["items"]) == 11
    assert {(i["agreement_version"], i["history"][0]["from"]) for i in placed["items"]} == {
        (version, None)
    }
    # The queue is empty, an open period owes no note, and nothing matched moves nothing.
    assert (
        await get(api, "metering", "/v1/items", client, period=period.key, status="unclassified")
    )["items"] == []
    assert (await get(api, "billing", "/v1/notes", client))["notes"] == []
    again = await reclassify(api, {**resolve, "id": f"queue-{SUFFIX}-2"})
    assert (again.json()["items"], again.json()["moved"]) == (0, [])
