"""The client page (SPEC §2 "Client keys", §10) in a real headless browser against the running
system, and the operator's review queue beside it.

A client with its own key and an agreement (no default: what the rules cannot place waits in the
review queue) works a month that is closed into an invoice, then a provider's reclassification
corrects some of its items there (a note is issued), and it works on in the open month; a second
client, with a key of its own, has an invoice too. The client page, opened with the first client's
key, must show the usage, the tier ladder with the tier it lands in and why, the invoice and the
note with their amounts, the items with the rule that placed each (paged, filtered), an item's
history — and nothing of the second client. The screenshot is saved to docs/client.png for the
README. The operator page must show the client's review queue and an item's provenance.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from shared.domain.periods import Period, period_bounds, period_of
from tests.e2e.conftest import Api
from tests.e2e.operations import spread
from tests.e2e.test_alignment import dispute_agreement
from tests.e2e.test_console_browser import CHROMIUM_ARGS, RENDER_TIMEOUT_MS, chromium
from tools.supervisor import REPO_ROOT

TZ = "America/New_York"
SUFFIX = uuid.uuid4().hex[:8]
CLIENT, OTHER = f"portal-{SUFFIX}", f"rival-{SUFFIX}"
CLIENT_KEYS = {client: f"client-key-{client}-{uuid.uuid4().hex}" for client in (CLIENT, OTHER)}
SCREENSHOT = REPO_ROOT / "docs" / "client.png"
SCREENSHOT_MAX_HEIGHT = 2400
#: The client page shows this many items a page (static/client.js PAGE_SIZE).
PAGE_SIZE = 25
NOTE_WAIT_SECONDS = 60


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    keys = ",".join(f"{client}={key}" for client, key in CLIENT_KEYS.items())
    return {"env": {"TIERLINE_CLIENT_KEYS": keys}, "instances": {}}


@dataclass(frozen=True)
class Story:
    open_period: Period
    closed_period: Period
    invoice: dict[str, Any]
    note: dict[str, Any]
    other_invoice: dict[str, Any]
    reclassification: dict[str, Any]
    #: Of the open period: all items, the large AP invoices, the unplaceable ones.
    open_items: int
    open_ap: list[str]
    open_odd: list[str]
    closed_ap: list[str]
    closed_odd: list[str]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def wait_for_note(api: Api, client: str) -> dict[str, Any]:
    """The client's one note: billing issues it once metering's reclassification is committed."""
    async with asyncio.timeout(NOTE_WAIT_SECONDS):
        while True:
            response = await api.http.get(
                f"{api.stack.url('billing')}/v1/notes",
                params={"client_id": client},
                headers=api.admin,
            )
            assert response.status_code == 200, response.text
            notes: list[dict[str, Any]] = response.json()["notes"]
            if notes:
                (note,) = notes
                return note
            await asyncio.sleep(0.5)


async def tell_the_story(api: Api) -> Story:
    for client in (CLIENT, OTHER):
        body = dispute_agreement(client)
        del body["classification"]["default"]  # what the rules cannot place waits for review
        assert (await api.put_agreement(body)).status_code == 200
    now = datetime.now(UTC)
    open_period = period_of(now, TZ)
    closed_period = open_period.previous()
    start, end = period_bounds(closed_period, TZ)
    open_start, _ = period_bounds(open_period, TZ)
    until = now - timedelta(minutes=1)
    large = {"queue": "AP Invoices", "units": 25, "handling_seconds": 5400}
    # SPEC §6 example 3 last month (600 care + 150 keying + 12 large AP invoices → Enterprise by
    # scope, 90000.00), with 5 items no rule places; this month 20 care + 12 large AP invoices
    # (W = 80: Essential by volume, Enterprise by scope) and 3 unplaceable.
    closed_ap = spread(CLIENT, "ap", 12, start, end, **large)
    closed_odd = spread(CLIENT, "odd", 5, start, end, queue="Master records")
    open_ap = spread(CLIENT, "now-ap", 12, open_start, until, **large)
    open_odd = spread(CLIENT, "now-odd", 3, open_start, until, queue="Master records")
    open_care = spread(CLIENT, "now-care", 20, open_start, until, queue="Care")
    posted = [
        *spread(CLIENT, "care", 600, start, end, queue="Care"),
        *spread(CLIENT, "key", 150, start, end, queue="Keying"),
        *closed_ap,
        *closed_odd,
        *open_care,
        *open_ap,
        *open_odd,
        *spread(OTHER, "rival-care", 40, start, end, queue="Care"),
    ]
    assert await api.post_items(posted) == len(posted)
    [invoice] = (await api.close(closed_period.key, CLIENT)).json()["invoices"]
    assert (invoice["tier"], invoice["total"]) == (
        {"name": "Enterprise", "reason": "scope"},
        "90000.00",
    )
    [other_invoice] = (await api.close(closed_period.key, OTHER)).json()["invoices"]
    assert other_invoice["total"] == "10000.00"

    reclassification = {
        "id": f"rc-{SUFFIX}-7",
        "client_id": CLIENT,
        "period": closed_period.key,
        "match": {"rule_id": "ap-invoices-large"},
        "to": {"service_line": "accounting", "complexity": "standard"},
        "reason": "client dispute #7: these invoices had under 20 lines",
    }
    response = await api.http.post(
        f"{api.stack.url('metering')}/v1/reclassifications",
        json=reclassification,
        headers=api.admin,
    )
    assert response.status_code == 200, response.text
    note = await wait_for_note(api, CLIENT)
    assert note["total"] == "-55000.00"  # re-rated now (Professional, 35000.00) − 90000.00
    return Story(
        open_period=open_period,
        closed_period=closed_period,
        invoice=invoice,
        note=note,
        other_invoice=other_invoice,
        reclassification=reclassification,
        open_items=len(open_care) + len(open_ap) + len(open_odd),
        open_ap=ids(open_ap),
        open_odd=ids(open_odd),
        closed_ap=ids(closed_ap),
        closed_odd=ids(closed_odd),
    )


async def metering_items(api: Api, client: str, period: Period) -> dict[str, dict[str, Any]]:
    """Every item of the client's period as metering serves it (the admin key), by id."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"client_id": client, "period": period.key, "limit": "1000"}
        response = await api.http.get(
            f"{api.stack.url('metering')}/v1/items",
            params=params | ({"cursor": cursor} if cursor else {}),
            headers=api.admin,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        found |= {item["id"]: item for item in page["items"]}
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def number(value: str | int) -> str:
    """A count or decimal as the page writes it (en-US grouping, at most 2 decimals)."""
    amount = Decimal(value)
    if amount == amount.to_integral_value():
        return f"{int(amount):,}"
    return f"{amount:,.2f}".rstrip("0").rstrip(".")


async def open_page(browser: Browser, url: str) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    return page, errors


async def item_rules(page: Page) -> dict[str, str]:
    """Item id → the rule cell of every row the items table shows."""
    rows = page.locator("[data-testid=items] .item-row")
    shown: dict[str, str] = {}
    for n in range(await rows.count()):
        row = rows.nth(n)
        item = await row.get_attribute("data-item")
        assert item is not None
        shown[item] = await row.locator("[data-field=rule]").inner_text()
    return shown


async def assert_usage_and_ladder(page: Page, usage: dict[str, Any]) -> None:
    """The KPIs are metering's usage report (SPEC §5), read independently of the console."""
    await expect(page.locator("[data-kpi=items] [data-field=items]")).to_have_text(
        number(usage["items"])
    )
    await expect(page.locator("[data-field=weighted-units]")).to_have_text(
        number(usage["weighted_units"])
    )
    await expect(page.locator("[data-field=unclassified]")).to_have_text(
        number(usage["unclassified_items"])
    )
    tier = usage["tier"]
    await expect(page.locator("[data-kpi=tier] .tier-now")).to_have_text(
        f"{tier['name']} · {tier['reason']}"
    )
    steps = page.locator("[data-testid=ladder] tr.step")
    await expect(steps).to_have_count(3)
    current = page.locator("[data-testid=ladder] tr.step[data-current=true]")
    await expect(current).to_have_count(1)
    await expect(current).to_have_attribute("data-tier", tier["name"])


async def assert_invoices_and_notes(page: Page, story: Story) -> None:
    invoice = story.invoice
    card = page.locator(f'[data-testid=invoices] [data-invoice="{invoice["invoice_id"]}"]')
    await expect(card).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    await expect(card.locator("[data-field=total]")).to_have_text(
        f"{invoice['total']} {invoice['currency']}"
    )
    lines = card.locator("tr.line")
    await expect(lines).to_have_count(len(invoice["lines"]))
    for index, line in enumerate(invoice["lines"]):
        await expect(lines.nth(index).locator("[data-field=amount]")).to_have_text(line["amount"])
    note = story.note
    shown = page.locator(f'[data-testid=notes] [data-note="{note["note_id"]}"]')
    await expect(shown).to_be_visible()
    await expect(shown.locator("[data-field=total]")).to_have_text(
        f"{note['total']} {note['currency']}"
    )
    await expect(shown.locator("[data-field=reason]")).to_have_text(note["reason"])
    await expect(shown.locator("[data-field=amount]")).to_have_text(note["lines"][0]["amount"])
    assert story.reclassification["reason"] in note["reason"]


async def assert_nothing_of_the_other_client(page: Page, story: Story) -> None:
    text = await page.locator("body").inner_text()
    assert OTHER not in text
    assert story.other_invoice["invoice_id"] not in text
    assert await page.locator(f'[data-invoice="{story.other_invoice["invoice_id"]}"]').count() == 0


async def test_the_client_page_shows_a_client_its_own_numbers(api: Api) -> None:
    story = await tell_the_story(api)
    console = api.stack.url("console")
    key = CLIENT_KEYS[CLIENT]
    open_usage = await api.usage(CLIENT, story.open_period.key)
    assert (open_usage["items"], open_usage["unclassified_items"]) == (32, 3)
    assert open_usage["tier"] == {"name": "Enterprise", "reason": "scope"}
    closed_usage = await api.usage(CLIENT, story.closed_period.key)
    assert (closed_usage["status"], closed_usage["weighted_units"]) == ("closed", "924")
    open_rules = {
        i: d["rule_id"] for i, d in (await metering_items(api, CLIENT, story.open_period)).items()
    }
    closed_rules = {
        i: d["rule_id"] for i, d in (await metering_items(api, CLIENT, story.closed_period)).items()
    }

    # The key-matrix of the new JSON, as the page's own requests would send it.
    mine = {"Authorization": f"Bearer {key}"}
    for target in (
        f"/api/client/overview?client_id={OTHER}",
        f"/api/items?client_id={OTHER}&period={story.closed_period.key}",
        f"/api/items/{OTHER}/rival-care-0",
    ):
        response = await api.http.get(f"{console}{target}", headers=mine)
        assert response.status_code == 403, (target, response.text)
    assert (await api.http.get(f"{console}/api/overview", headers=mine)).status_code == 403

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page, errors = await open_page(browser, f"{console}/client?key={key}")
            await expect(page.locator("#view")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
            assert "key=" not in page.url  # taken out of the address bar at once
            await expect(page.locator("#client-meta")).to_contain_text(CLIENT)
            await expect(page.locator("body")).to_have_attribute(
                "data-period", story.open_period.key
            )

            # The open period: metering's usage, and the ladder says why it lands in Enterprise.
            await assert_usage_and_ladder(page, open_usage)
            ladder = page.locator("[data-testid=ladder]")
            await expect(ladder.locator('tr[data-tier="Essential"] .mark.volume')).to_be_visible()
            await expect(ladder.locator('tr[data-tier="Enterprise"] .mark.scope')).to_be_visible()
            await expect(ladder.locator('tr[data-tier="Enterprise"] .mark.here')).to_be_visible()
            await expect(
                ladder.locator('tr[data-tier="Enterprise"] [data-field=fee]')
            ).to_have_text("90000.00 USD")
            why = page.locator("[data-testid=ladder-why]")
            await expect(why).to_contain_text("accounting/complex (12 items)")
            await expect(why).to_contain_text("Now: Enterprise, by scope.")
            await assert_invoices_and_notes(page, story)

            # Its items, with the rule that placed each: a page of 25, then the rest.
            rows = page.locator("[data-testid=items] .item-row")
            await expect(rows).to_have_count(PAGE_SIZE, timeout=RENDER_TIMEOUT_MS)
            first_page = await item_rules(page)
            await page.click("#items-next")
            await expect(rows).to_have_count(story.open_items - PAGE_SIZE)
            await expect(page.locator("#items-page")).to_have_text("page 2")
            second_page = await item_rules(page)
            shown = first_page | second_page
            assert len(shown) == story.open_items
            assert shown == {i: rule or "—" for i, rule in open_rules.items()}
            assert {shown[i] for i in story.open_ap} == {"ap-invoices-large"}
            # Filtered: the review queue, then one service line.
            await page.select_option("#filter-status", "unclassified")
            await expect(rows).to_have_count(len(story.open_odd))
            assert await item_rules(page) == dict.fromkeys(story.open_odd, "—")
            await expect(rows.first.locator("[data-field=class]")).to_have_text("unclassified")
            await page.select_option("#filter-status", "")
            await page.select_option("#filter-line", "accounting")
            await expect(rows).to_have_count(len(story.open_ap))
            assert await item_rules(page) == dict.fromkeys(story.open_ap, "ap-invoices-large")

            # The closed period: billed at Enterprise; the counts follow the correction.
            await page.select_option("#period-select", story.closed_period.key)
            await expect(page.locator("body")).to_have_attribute(
                "data-period", story.closed_period.key
            )
            await assert_usage_and_ladder(page, closed_usage)
            await expect(ladder.locator('tr[data-tier="Enterprise"] .mark.here')).to_have_text(
                "billed"
            )
            await expect(rows).to_have_count(len(story.closed_ap))  # the accounting filter holds
            corrected = f"reclassification:{story.reclassification['id']}"
            assert await item_rules(page) == dict.fromkeys(story.closed_ap, corrected)
            assert {closed_rules[i] for i in story.closed_ap} == {corrected}

            # An item's provenance: its class now, what placed it, and its history.
            await rows.first.click()
            provenance = page.locator("[data-testid=provenance] .provenance-body")
            await expect(provenance).to_have_attribute("data-item", story.closed_ap[0])
            await expect(provenance.locator('[data-field="class-now"]')).to_have_text(
                "accounting / standard"
            )
            await expect(provenance.locator('[data-field="placed-by"]')).to_have_text(corrected)
            change = provenance.locator(
                f'li.change[data-reclassification="{story.reclassification["id"]}"]'
            )
            await expect(change).to_contain_text("accounting / complex → accounting / standard")
            await expect(change).to_contain_text(story.reclassification["reason"])

            await assert_nothing_of_the_other_client(page, story)
            assert not errors, errors
            height = await page.evaluate("document.documentElement.scrollHeight")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(
                path=str(SCREENSHOT),
                full_page=True,
                clip={"x": 0, "y": 0, "width": 1440, "height": min(height, SCREENSHOT_MAX_HEIGHT)},
            )
            assert 20_000 < SCREENSHOT.stat().st_size < 3_000_000

            # The admin key opens any client's page once the client is named: the same numbers.
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            operator = await context.new_page()
            await operator.goto(f"{console}/client?key={api.stack.admin_key}")
            await expect(operator.locator("#client-label")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
            await operator.fill("#client-input", CLIENT)
            await operator.press("#client-input", "Enter")
            await expect(operator.locator("#client-name .tag")).to_have_text("operator view")
            await assert_usage_and_ladder(operator, open_usage)
            await context.close()

            await assert_review_queue(browser, api, story)
        finally:
            await browser.close()


async def assert_review_queue(browser: Browser, api: Api, story: Story) -> None:
    """The operator page: the client's review queue with its counts; a count lists the items,
    an item shows its provenance; any client's item can be looked up by id."""
    page, errors = await open_page(
        browser, f"{api.stack.url('console')}/?key={api.stack.admin_key}"
    )
    await expect(page.locator("#dashboard")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    await page.fill("#client-filter", CLIENT)
    queue = page.locator(f'[data-testid=review-queue] tr[data-queue="{CLIENT}"]')
    await expect(queue).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    await expect(queue.locator("[data-field=unclassified]")).to_have_text(str(len(story.open_odd)))
    await expect(queue.locator("[data-field=closed-unclassified]")).to_have_text(
        str(len(story.closed_odd))
    )
    await queue.locator("button[data-field=closed-unclassified]").click()
    listed = page.locator("#queue-items .item-row")
    await expect(listed).to_have_count(len(story.closed_odd))
    listed_ids = [
        await listed.nth(n).get_attribute("data-item") for n in range(len(story.closed_odd))
    ]
    assert sorted(str(i) for i in listed_ids) == sorted(story.closed_odd)
    await listed.first.click()
    provenance = page.locator("#provenance .provenance-body")
    await expect(provenance.locator('[data-field="placed-by"]')).to_have_text(
        "no rule: review queue"
    )
    await expect(provenance.locator('[data-field="class-now"]')).to_have_text("unclassified")
    # Any item by client and id: the second client's, placed by its rule.
    await page.fill("#lookup-client", OTHER)
    await page.fill("#lookup-item", "rival-care-0")
    await page.click("#lookup-form button")
    await expect(provenance).to_have_attribute("data-item", "rival-care-0")
    await expect(provenance.locator('[data-field="placed-by"]')).to_have_text("care")
    await expect(provenance.locator('[data-field="class-now"]')).to_have_text(
        "customer_support / basic"
    )
    assert not errors, errors
