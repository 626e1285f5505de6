"""End to end, through the public interfaces only: HTTP in, Kafka and HTTP out.

The four services run as separate processes on a real Kafka broker and PostgreSQL. Clients post
work items (re-sending some), the period is closed, and the invoice is read both from the
`billing.invoices` topic and from `GET /v1/invoices`, with SPEC §6's totals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.periods import Period, period_bounds, period_of
from tests.e2e.conftest import Api, invoice_events
from tests.spec_example import spec_agreement


def last_month() -> Period:
    return period_of(datetime.now(UTC), "UTC").previous()


def items(client_id: str, queue: str, count: int, period: Period, tz: str) -> list[dict[str, Any]]:
    start, end = period_bounds(period, tz)
    step = (end - start) / (count + 1)
    return [
        {
            "id": f"{queue.replace(' ', '-').lower()}-{n}",
            "client_id": client_id,
            "source": "zendesk",
            "completed_at": (start + step * (n + 1)).isoformat(),
            "queue": queue,
        }
        for n in range(count)
    ]


async def test_spec_examples_1_and_4_end_to_end(api: Api, run_id: str) -> None:
    period = last_month()
    tz = "America/New_York"
    example1, example4 = f"ex1-{run_id}", f"ex4-{run_id}"
    for client in (example1, example4):
        response = await api.put_agreement(spec_agreement(client))
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1

    first = items(example1, "Customer Care", 600, period, tz) + items(
        example1, "Data Entry", 150, period, tz
    )
    resent = first[:40]  # a ticketing system re-sends: counted once
    fourth = items(example4, "IT Desk", 3240, period, tz)
    assert await api.post_items(first + resent + fourth) == 750 + 40 + 3240

    response = await api.close(period.key, example1)
    assert response.status_code == 200, response.text
    closed = response.json()
    assert closed["period"] == period.key
    assert [i["total"] for i in closed["invoices"]] == ["10000.00"]
    response = await api.close(period.key, example4)
    assert response.status_code == 200, response.text

    usage = await api.usage(example1, period.key)
    assert (usage["items"], usage["weighted_units"], usage["status"]) == (750, "900", "closed")
    assert usage["tier"] == {"name": "Essential", "reason": "volume"}

    ids = {f"{example1}-{period.key}-1", f"{example4}-{period.key}-1"}
    events = await invoice_events(api.stack.kafka_bootstrap, ids)
    one, four = events[f"{example1}-{period.key}-1"], events[f"{example4}-{period.key}-1"]
    for event, client in ((one, example1), (four, example4)):
        assert event["specversion"] == "1.0"
        assert event["type"] == "bpo.invoice.issued"
        assert event["source"] == "/tierline/billing"
        assert event["subject"] == client
        assert event["datacontenttype"] == "application/json"
        assert event["time"] == event["data"]["issued_at"]

    assert one["data"]["total"] == "10000.00"
    assert one["data"]["usage"]["items"] == 750
    assert one["data"]["usage"]["weighted_units"] == "900"
    assert one["data"]["tier"] == {"name": "Essential", "reason": "volume"}
    assert one["data"]["lines"] == [
        {
            "kind": "tier_fee",
            "description": "Essential tier (volume)",
            "quantity": "1",
            "unit_price": "10000.00",
            "amount": "10000.00",
        }
    ]
    start, end = period_bounds(period, tz)
    assert one["data"]["period_start"] == start.isoformat()
    assert one["data"]["period_end"] == end.isoformat()
    assert one["data"]["agreement_version"] == 1

    assert four["data"]["total"] == "99000.00"
    assert four["data"]["usage"]["weighted_units"] == "16200"
    assert [
        (line["kind"], line["quantity"], line["unit_price"], line["amount"])
        for line in four["data"]["lines"]
    ] == [
        ("tier_fee", "1", "90000.00", "90000.00"),
        ("overage", "1200", "7.50", "9000.00"),
    ]

    over_http = await api.invoices(client_id=example4, period=period.key)
    assert over_http == [four["data"]]
    response = await api.http.get(
        f"{api.stack.url('billing')}/v1/invoices/{example1}-{period.key}-1", headers=api.admin
    )
    assert response.json() == one["data"]


async def test_closing_twice_issues_nothing_new(api: Api, run_id: str) -> None:
    period = last_month()
    client = f"twice-{run_id}"
    assert (await api.put_agreement(spec_agreement(client))).status_code == 200
    await api.post_items(items(client, "Customer Care", 5, period, "America/New_York"))
    first = (await api.close(period.key, client)).json()
    second = (await api.close(period.key, client)).json()
    assert first["invoices"] == second["invoices"]
    assert len(await api.invoices(client_id=client)) == 1


async def test_items_for_a_closed_period_are_late(api: Api, run_id: str) -> None:
    period = last_month()
    client = f"late-{run_id}"
    assert (await api.put_agreement(spec_agreement(client))).status_code == 200
    batch = items(client, "Customer Care", 10, period, "America/New_York")
    await api.post_items(batch[:6])
    assert (await api.close(period.key, client)).status_code == 200
    await api.post_items(batch)  # 6 duplicates and 4 late items
    # a close of a period long before the agreement: only its barrier (every accepted item
    # metered) matters here
    assert (await api.close("2000-01", client)).status_code == 200
    usage = await api.usage(client, period.key)
    assert (usage["items"], usage["late_items"]) == (10, 4)


async def test_unknown_key_and_wrong_key(api: Api) -> None:
    intake = f"{api.stack.url('intake')}/v1/work-items"
    assert (await api.http.post(intake, json={})).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await api.http.post(intake, json={}, headers=wrong)).status_code == 401
    assert (await api.http.post(intake, json={}, headers=api.admin)).status_code == 403
    invoices = f"{api.stack.url('billing')}/v1/invoices"
    assert (await api.http.get(invoices, headers=api.intake)).status_code == 403


async def test_invalid_items_publish_nothing(api: Api, run_id: str) -> None:
    client = f"bad-{run_id}"
    now = datetime.now(UTC)
    good = {"id": "1", "client_id": client, "source": "s", "completed_at": now.isoformat()}
    bad = {**good, "id": "2", "units": "5", "tags": ["ok", 7]}
    future = {**good, "id": "3", "completed_at": (now + timedelta(minutes=10)).isoformat()}
    response = await api.http.post(
        f"{api.stack.url('intake')}/v1/work-items", json=[good, bad, future], headers=api.intake
    )
    assert response.status_code == 422
    errors = {(e["index"], tuple(e["loc"])) for e in response.json()["errors"]}
    assert errors == {(1, ("units",)), (1, ("tags", 1)), (2, ("completed_at",))}
    await api.close(period_of(now, "UTC").previous().key, client)  # barrier: all metered
    usage = await api.usage(client, period_of(now, "UTC").key)
    assert usage["items"] == 0
