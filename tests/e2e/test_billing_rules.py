"""SPEC §3–§7 end to end on real Kafka and PostgreSQL: two clients in different currencies and
timezones, a late batch and its adjustment, re-closing, unbilled clients, alerts, the
completeness barrier and automatic closing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.contracts.alerts import UsageAlert
from shared.domain.periods import period_bounds
from tests.e2e.conftest import Api, invoice_events
from tests.e2e.test_pipeline import last_month
from tools.localinfra import free_port
from tools.supervisor import ServiceProcess

CARE = {
    "when": {"queue": "Care"},
    "then": {"service_line": "customer_support", "complexity": "basic"},
}
PAYROLL = {
    "when": {"tags": {"contains": "payroll"}},
    "then": {"service_line": "hr", "complexity": "standard"},
}


def agreement(
    client: str,
    currency: str,
    tz: str,
    fees: tuple[str, str],
    *,
    mode: str = "upgrade",
    overage: str | None = None,
) -> dict[str, Any]:
    return {
        "client_id": client,
        "currency": currency,
        "timezone": tz,
        "effective_from": "2026-01-01",
        "classification": {"rules": [{"id": "payroll", **PAYROLL}, {"id": "care", **CARE}]},
        "pricing": {
            "weights": {"basic": 1, "standard": "1.5", "complex": 5},
            "tiers": [
                {
                    "name": "Essential",
                    "up_to": 1000,
                    "fee": fees[0],
                    "scope": {"customer_support": "all"},
                },
                {"name": "Professional", "up_to": None, "fee": fees[1]},
            ],
            "scope_policy": {
                "mode": mode,
                "min_items": 5,
                "out_of_scope_rate": "12.25" if currency != "JPY" else "1225",
            },
            **({"overage_rate": overage} if overage else {}),
        },
    }


def care(
    client: str, prefix: str, count: int, start: Any, end: Any, **extra: Any
) -> list[dict[str, Any]]:
    step = (end - start) / (count + 1)
    return [
        {
            "id": f"{prefix}-{n}",
            "client_id": client,
            "source": "jira",
            "completed_at": (start + step * (n + 1)).isoformat(),
            "queue": "Care",
            **extra,
        }
        for n in range(count)
    ]


async def read_topic(
    bootstrap: str, topic: str, keys: set[bytes], want: int, timeout: float = 20
) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [json.loads(r.value) for r in records if r.key in keys]
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


async def test_two_currencies_two_timezones_late_batch_and_reclose(api: Api, run_id: str) -> None:
    period = last_month()
    eur, inr = f"eur-{run_id}", f"inr-{run_id}"
    assert (
        await api.put_agreement(agreement(eur, "EUR", "Europe/Berlin", ("10000.00", "35000.00")))
    ).status_code == 200
    assert (
        await api.put_agreement(
            agreement(inr, "INR", "Asia/Kolkata", ("750000.50", "990000.00"), mode="surcharge")
        )
    ).status_code == 200

    berlin = period_bounds(period, "Europe/Berlin")
    kolkata = period_bounds(period, "Asia/Kolkata")
    eur_items = care(eur, "c", 900, *berlin)
    # Four hours before the end of the month in UTC: still this month in Berlin (UTC+1/+2),
    # already next month in Kolkata (UTC+05:30).
    edge = (period_bounds(period, "UTC")[1] - timedelta(hours=4)).isoformat()
    eur_items.append({**eur_items[0], "id": "edge", "completed_at": edge})
    inr_items = care(inr, "c", 300, *kolkata)
    inr_items += care(inr, "p", 7, *kolkata, tags=["Payroll"])  # hr/standard: out of scope
    inr_items.append({**inr_items[0], "id": "edge", "completed_at": edge})
    await api.post_items(eur_items + inr_items)

    closed = (await api.close(period.key)).json()
    mine = {i["client_id"]: i for i in closed["invoices"] if i["client_id"] in (eur, inr)}
    assert mine[eur]["total"] == "10000.00"
    assert mine[eur]["usage"]["items"] == 901  # the edge item is October in Berlin
    assert mine[eur]["currency"] == "EUR"
    assert mine[inr]["usage"]["items"] == 307  # ... and November in Kolkata
    assert mine[inr]["period_start"] == kolkata[0].isoformat()
    assert mine[inr]["period_start"].endswith("+05:30")
    assert mine[inr]["tier"] == {"name": "Essential", "reason": "volume"}
    assert [
        (
            line["kind"],
            line.get("service_line"),
            line["quantity"],
            line["unit_price"],
            line["amount"],
        )
        for line in mine[inr]["lines"]
    ] == [
        ("tier_fee", None, "1", "750000.50", "750000.50"),
        ("out_of_scope", "hr", "10.5", "12.25", "128.63"),  # 7 × 1.5 × 12.25 = 128.625 → half-up
    ]
    assert mine[inr]["total"] == "750129.13"

    # Re-closing issues nothing new and answers with the same invoices.
    again = (await api.close(period.key)).json()
    assert [i for i in again["invoices"] if i["client_id"] in (eur, inr)] == list(mine.values())

    # A late batch for the closed month: metered, flagged late, never changes the old invoice...
    late = care(eur, "late", 200, *berlin)
    await api.post_items(late)
    current = period.next()
    closed_next = (await api.close(current.key, eur)).json()
    usage = await api.usage(eur, period.key)
    assert (usage["status"], usage["items"], usage["late_items"]) == ("closed", 1101, 200)
    assert (await api.invoices(client_id=eur, period=period.key)) == [mine[eur]]
    # ... and the next invoice re-rates the month: 1101 > 1000 → Professional, 35000 − 10000.
    [next_invoice] = closed_next["invoices"]
    assert [
        (line["kind"], line.get("period"), line["amount"]) for line in next_invoice["lines"]
    ] == [
        ("tier_fee", None, "10000.00"),
        ("late_adjustment", period.key, "25000.00"),
    ]
    assert next_invoice["total"] == "35000.00"
    events = await invoice_events(api.stack.kafka_bootstrap, {next_invoice["invoice_id"]})
    assert events[next_invoice["invoice_id"]]["data"] == next_invoice


async def test_a_zero_late_adjustment_is_still_shown(api: Api, run_id: str) -> None:
    period = last_month()
    client = f"zero-{run_id}"
    await api.put_agreement(agreement(client, "GBP", "Europe/London", ("500.00", "900.00")))
    bounds = period_bounds(period, "Europe/London")
    await api.post_items(care(client, "a", 10, *bounds))
    await api.close(period.key, client)
    await api.post_items(care(client, "b", 3, *bounds))  # late, but still Essential
    [invoice] = (await api.close(period.next().key, client)).json()["invoices"]
    assert [
        (line["kind"], line["quantity"], line["unit_price"], line["amount"])
        for line in invoice["lines"]
    ] == [
        ("tier_fee", "1", "500.00", "500.00"),
        ("late_adjustment", "1", "0.00", "0.00"),
    ]


async def test_usage_without_an_agreement_is_unbilled(api: Api, run_id: str) -> None:
    period = last_month()
    client = f"noagr-{run_id}"
    # Without an agreement the built-in vocabulary classifies ("Refund"); "Care" alone it cannot.
    bounds = period_bounds(period, "UTC")
    await api.post_items(care(client, "x", 4, *bounds, title="Refund"))
    await api.post_items(care(client, "y", 2, *bounds))
    for _ in range(2):  # listed again on a repeated close
        closed = (await api.close(period.key, client)).json()
        assert closed["invoices"] == []
        assert closed["unbilled"] == [{"client_id": client, "items": 4}]
    usage = await api.usage(client, period.key)
    assert (usage["status"], usage["tier"], usage["weighted_units"]) == ("closed", None, "0")
    assert (usage["items"], usage["unclassified_items"]) == (4, 2)


async def test_alerts_at_eighty_and_a_hundred_percent_once_each(api: Api, run_id: str) -> None:
    period = last_month()
    client = f"alert-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("1.00", "2.00"), overage=None))
    bounds = period_bounds(period, "UTC")
    await api.post_items(care(client, "a", 850, *bounds))
    await api.post_items(care(client, "a", 850, *bounds))  # all duplicates: no new alert
    await api.post_items(care(client, "b", 200, *bounds))
    await api.close(period.key, client)  # the barrier: everything metered
    alerts = await read_topic(
        api.stack.kafka_bootstrap, "usage.alerts", {client.encode()}, 3, timeout=10
    )
    assert sorted((a["data"]["threshold"], a["data"]["tier"]) for a in alerts) == [
        ("100", "Essential"),
        ("80", "Essential"),
    ]
    for alert in alerts:  # each is the contract's UsageAlert and reads back unchanged
        assert UsageAlert.model_validate(alert).model_dump(mode="json") == alert


async def test_the_barrier_answers_503_and_closes_nothing(api: Api, run_id: str) -> None:
    period = last_month()
    client = f"barrier-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("10.00", "20.00")))
    classifier = api.stack.processes["classifier"]
    classifier.stop()
    try:
        await api.post_items(care(client, "a", 20, *period_bounds(period, "UTC")))
        response = await api.close(period.key, client)
        assert response.status_code == 503
        assert "retry-after" in response.headers
        assert (await api.invoices(client_id=client)) == []
        assert (await api.usage(client, period.key))["status"] == "open"
    finally:
        classifier.start()
        classifier.wait_healthy()
    response = await api.close(period.key, client)
    assert response.status_code == 200
    assert response.json()["invoices"][0]["usage"]["items"] == 20


async def test_periods_close_automatically_after_the_grace(api: Api, run_id: str) -> None:
    period = last_month()
    client = f"auto-{run_id}"
    await api.put_agreement(agreement(client, "USD", "UTC", ("10.00", "20.00")))
    await api.post_items(care(client, "a", 5, *period_bounds(period, "UTC")))
    env = {
        **api.stack.processes["billing"].env,
        "BILLING_CLOSE_GRACE_HOURS": "0",
        "BILLING_AUTO_CLOSE_INTERVAL_SECONDS": "0.5",
        "BILLING_PORT": str(free_port()),
    }
    eager = ServiceProcess(
        "billing", int(env["BILLING_PORT"]), env, api.stack.log_dir / "billing-eager.log"
    )
    eager.start()
    try:
        eager.wait_healthy()
        found: list[dict[str, Any]] = []
        for _ in range(60):  # automatic closing runs every half second here
            if found := await api.invoices(client_id=client, period=period.key):
                break
            await asyncio.sleep(0.5)
    finally:
        eager.stop()
    assert found[0]["total"] == "10.00" and found[0]["usage"]["items"] == 5


async def test_every_put_is_a_new_version_and_items_record_the_one_used(
    api: Api, run_id: str
) -> None:
    client = f"versions-{run_id}"
    first = agreement(client, "USD", "UTC", ("1.00", "2.00"))
    second = {
        **first,
        "classification": {
            "rules": [
                {
                    "id": "all-care-is-hr",
                    "when": {"queue": "Care"},
                    "then": {"service_line": "hr", "complexity": "complex"},
                },
            ]
        },
    }
    assert (await api.put_agreement(first)).json()["version"] == 1
    assert (await api.put_agreement(first)).json()["version"] == 2  # also when nothing changed
    stored = (await api.put_agreement(second)).json()
    assert stored["version"] == 3
    current = await api.http.get(
        f"{api.stack.url('billing')}/v1/agreements/{client}", headers=api.admin
    )
    assert current.json() == stored
    await api.post_items(care(client, "v", 1, *period_bounds(last_month(), "UTC")))
    [classified] = await read_topic(
        api.stack.kafka_bootstrap, "workitems.classified", {client.encode()}, 1
    )
    assert (classified["agreement_version"], classified["rule_id"]) == (3, "all-care-is-hr")
    assert (classified["service_line"], classified["complexity"]) == ("hr", "complex")


async def test_an_invalid_agreement_is_rejected_naming_the_field(api: Api, run_id: str) -> None:
    client = f"invalid-{run_id}"
    body = agreement(client, "USD", "UTC", ("1.00", "2.00"))
    body["pricing"]["tiers"][1]["up_to"] = 500  # not ascending
    response = await api.put_agreement(body)
    assert response.status_code == 422
    assert ["pricing", "tiers", 1, "up_to"] in [e["loc"] for e in response.json()["errors"]]
    wrong_path = await api.http.put(
        f"{api.stack.url('billing')}/v1/agreements/someone-else",
        json=agreement(client, "USD", "UTC", ("1.00", "2.00")),
        headers=api.admin,
    )
    assert wrong_path.status_code == 422
    assert wrong_path.json()["errors"][0]["loc"] == ["client_id"]
    missing = await api.http.get(
        f"{api.stack.url('billing')}/v1/agreements/{client}", headers=api.admin
    )
    assert missing.status_code == 404
