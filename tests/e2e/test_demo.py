"""`./tierline up`'s demo (tools/cli.py `run_demo`) against the running system, and what the
console makes of its SPEC §11 client.

The demo loads deploy/demo's agreements, streams last month's work and closes last month for its
clients. initech's commitment starts 11 months before last month, so closing last month first
closes the year's eleven earlier (empty) periods at the Core fee, and last month's invoice carries
a `service_credit` (its care work missed its level) and the year's `commitment_true_up`. The
console must show the same figures to the cent — computed from the ledger and billing's closed
periods, not read off the invoice — in its JSON and on the client page and the operator page.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import async_playwright, expect

from shared.domain.periods import Period, period_bounds, period_of
from tests.e2e.conftest import Api
from tests.e2e.operations import spread
from tests.e2e.test_console_browser import CHROMIUM_ARGS, RENDER_TIMEOUT_MS, chromium
from tools import cli

CLIENT = "initech"
TZ = "Europe/Berlin"
METERED_WAIT_SECONDS = 60
#: This month's care work so far: 15 opened half an hour before, 5 ten hours before.
ON_TIME, LATE = 15, 5
LEVELS = [
    {
        "id": "ap-turnaround",
        "measured": 60,
        "met": 60,
        "attainment_percent": "100.00",
        "target_percent": "95",
        "missed": False,
    },
    {
        "id": "care-turnaround",
        "measured": 300,
        "met": 240,
        "attainment_percent": "80.00",
        "target_percent": "90",
        "missed": True,
    },
]


async def console_overview(api: Api, **params: str) -> dict[str, Any]:
    response = await api.http.get(
        f"{api.stack.url('console')}/api/client/overview",
        params={"client_id": CLIENT, **params},
        headers=api.admin,
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def this_month_s_care_work(api: Api) -> Period:
    """initech's care work of the open period, each item with `opened_at`, once metered."""
    now = datetime.now(UTC)
    open_period = period_of(now, TZ)
    start, _ = period_bounds(open_period, TZ)
    items = spread(CLIENT, "now-care", ON_TIME + LATE, start, now - timedelta(minutes=1))
    for n, item in enumerate(items):
        hours = 10 if n < LATE else 0.5
        completed = datetime.fromisoformat(item["completed_at"])
        item |= {
            "queue": "Customer Care",
            "opened_at": (completed - timedelta(hours=hours)).isoformat(),
        }
    assert await api.post_items(items) == len(items)
    async with asyncio.timeout(METERED_WAIT_SECONDS):
        while True:
            if (await api.usage(CLIENT, open_period.key))["items"] == len(items):
                break
            await asyncio.sleep(0.5)
    return open_period


def reported(standing: dict[str, Any]) -> list[dict[str, Any]]:
    """The console's levels as the invoice's `service_levels` report them."""
    return [{k: level[k] for k in LEVELS[0]} for level in standing["levels"]]


async def test_the_demo_bills_a_service_credit_and_a_true_up_and_the_console_shows_them(
    api: Api,
) -> None:
    now = datetime.now(UTC)
    invoices = await asyncio.to_thread(cli.run_demo, api.stack, now=now)
    last = period_of(now, "UTC").previous()
    by_client = {invoice["client_id"]: invoice for invoice in invoices}
    assert sorted(by_client) == cli.demo_clients() == ["acme", "globex", "initech"]
    assert {invoice["period"] for invoice in invoices} == {last.key}
    assert by_client["acme"]["total"] == "90000.00"  # SPEC §6 example 3, as before
    assert "service_levels" not in by_client["acme"]

    invoice = by_client[CLIENT]
    lines = [(line["kind"], line["amount"]) for line in invoice["lines"]]
    assert lines == [
        ("tier_fee", "15000.00"),  # Plus: W = 300 care + 60 AP invoices × 2 = 420 > 400
        ("service_credit", "-600.00"),  # 15000.00 × 10 % at risk × 40 % pool share
        ("commitment_true_up", "39000.00"),  # 120000.00 − (11 × 6000.00 + 15000.00)
    ]
    credit, true_up = invoice["lines"][1], invoice["lines"][2]
    assert credit["service_level"] == "care-turnaround"
    year = f"{cli.contract_start(last).strftime('%Y-%m')}..{last.key}"
    assert year in true_up["description"]
    assert invoice["total"] == "53400.00"
    assert invoice["service_levels"] == LEVELS
    # The year's eleven earlier periods, closed first, each billed the Core fee.
    year_invoices = await api.invoices(client_id=CLIENT)
    assert len(year_invoices) == 12
    assert sorted(i["total"] for i in year_invoices) == ["53400.00"] + ["6000.00"] * 11

    # The console, from the ledger and billing's closed periods: the same figures.
    closed = await console_overview(api, period=last.key)
    standing = closed["service_levels"]
    assert reported(standing) == invoice["service_levels"]
    assert (standing["tier"], standing["tier_fee"], standing["credits"]) == (
        "Plus",
        "15000.00",
        credit["amount"],
    )
    assert [level["credit_at_stake"] for level in standing["levels"]] == ["-900.00", "-600.00"]
    assert closed["commitment"] == {
        "contract_year": 1,
        "first_period": cli.contract_start(last).strftime("%Y-%m"),
        "last_period": last.key,
        "annual_minimum": "120000.00",
        "periods_closed": 12,
        "committed_spend": "81000.00",
        "remaining": true_up["amount"],
        "year_closed": True,
    }
    # The open period starts the second year: nothing committed yet; its care work so far
    # misses the level (15 of 20 within 4 hours) at the tier it is in now, Core.
    open_period = await this_month_s_care_work(api)
    open_now = await console_overview(api)
    assert open_now["period"] == open_period.key
    assert open_now["commitment"] == {
        "contract_year": 2,
        "first_period": last.next().key,
        "last_period": open_now["commitment"]["last_period"],
        "annual_minimum": "120000.00",
        "periods_closed": 0,
        "committed_spend": "0.00",
        "remaining": "120000.00",
        "year_closed": False,
    }
    levels = open_now["service_levels"]
    assert [
        (lv["id"], lv["measured"], lv["met"], lv["attainment_percent"], lv["missed"])
        for lv in levels["levels"]
    ] == [
        ("ap-turnaround", 0, 0, None, False),
        ("care-turnaround", ON_TIME + LATE, ON_TIME, "75.00", True),
    ]
    assert (levels["tier"], levels["tier_fee"], levels["credits"]) == ("Core", "6000.00", "-240.00")

    response = await api.http.get(f"{api.stack.url('console')}/api/overview", headers=api.admin)
    assert response.status_code == 200, response.text
    (card,) = [c for c in response.json()["usage"] if c["client_id"] == CLIENT]
    assert card["commitment"] == open_now["commitment"]
    assert card["service_levels"] == open_now["service_levels"]
    (acme,) = [c for c in response.json()["usage"] if c["client_id"] == "acme"]
    assert (acme["service_levels"], acme["commitment"]) == (None, None)

    await assert_the_pages_show_them(api, last.key, invoice)


async def assert_the_pages_show_them(api: Api, period: str, invoice: dict[str, Any]) -> None:
    console = api.stack.url("console")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{console}/client?key={api.stack.admin_key}&client_id={CLIENT}")
            await expect(page.locator("#view")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
            await page.select_option("#period-select", period)
            await expect(page.locator("body")).to_have_attribute("data-period", period)
            levels = page.locator("[data-testid=service-levels]")
            care = levels.locator('tr[data-level="care-turnaround"]')
            await expect(care.locator("[data-field=status]")).to_have_text("missed")
            await expect(care.locator("[data-field=attainment]")).to_have_text("80.00 %")
            await expect(care.locator("[data-field=credit]")).to_have_text("-600.00 EUR")
            ap = levels.locator('tr[data-level="ap-turnaround"]')
            await expect(ap.locator("[data-field=status]")).to_have_text("met")
            await expect(levels.locator("[data-field=credits]")).to_have_text("-600.00 EUR")
            commitment = page.locator("[data-testid=commitment]")
            await expect(commitment.locator("[data-field=committed]")).to_have_text("81000.00 EUR")
            await expect(commitment.locator("[data-field=remaining]")).to_have_text("39000.00 EUR")
            await expect(commitment.locator("[data-field=periods-closed]")).to_have_text("12 of 12")
            card = page.locator(f'[data-testid=invoices] [data-invoice="{invoice["invoice_id"]}"]')
            await expect(card.locator('tr[data-kind="service_credit"]')).to_contain_text("-600.00")
            await expect(card.locator('tr[data-kind="commitment_true_up"]')).to_contain_text(
                "39000.00"
            )
            await expect(card.locator('[data-level="care-turnaround"]')).to_contain_text("missed")

            operator = await browser.new_page(viewport={"width": 1440, "height": 1000})
            operator.on("pageerror", lambda error: errors.append(str(error)))
            await operator.goto(f"{console}/?key={api.stack.admin_key}")
            await operator.fill("#client-filter", CLIENT)
            row = operator.locator(f'.usage-row[data-client="{CLIENT}"]')
            await expect(row.locator("[data-field=remaining]")).to_have_text(
                "120000.00", timeout=RENDER_TIMEOUT_MS
            )
            await expect(row.locator('.chip[data-level="care-turnaround"]')).to_be_visible()
            assert not errors, errors
        finally:
            await browser.close()
