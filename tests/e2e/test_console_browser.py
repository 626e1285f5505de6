"""The operator console in a real headless browser against the running system.

Debian's chromium (`/usr/bin/chromium`, or `TIERLINE_CHROMIUM`) driven by Playwright; no browser
is ever downloaded. `./tierline setup` installs chromium when it is missing and it can; when it is
still missing this test fails saying so — it never skips.

The stack runs all five services; the workload puts an agreement in place, posts two months of
items, dead-letters one record and closes last month. The page must render all of it — topics
with rates, lag per partition, the client's usage with its tier, the invoice with its lines, the
dead letter with its error — and the screenshot is saved to docs/console.png for the README.
"""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright, expect

from shared.contracts.topics import ALL_TOPICS, CLASSIFIER_GROUP, METERING_GROUP
from tests.e2e.conftest import Api
from tests.e2e.operations import Workload, run_workload, spread
from tools.supervisor import REPO_ROOT

CHROMIUM = Path(os.environ.get("TIERLINE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO_ROOT / "docs" / "console.png"
SCREENSHOT_MAX_HEIGHT = 2000
RENDER_TIMEOUT_MS = 30_000
TRICKLE_BATCHES = 12
TRICKLE_SIZE = 25


async def keep_posting(api: Api, workload: Workload, *, batches: int) -> None:
    """This month's work arriving while the page is open: a batch every half second."""
    now = datetime.now(UTC)
    for batch in range(batches):
        items = spread(
            workload.client_id,
            f"live-{batch}",
            TRICKLE_SIZE,
            now - timedelta(hours=1),
            now - timedelta(minutes=1),
            queue="Customer Care",
        )
        assert await api.post_items(items) == TRICKLE_SIZE
        await asyncio.sleep(0.5)


def chromium() -> str:
    assert CHROMIUM.exists(), (
        f"chromium not found at {CHROMIUM}: the console's browser test needs Debian's chromium. "
        "Install it with `apt-get install -y chromium` (./tierline setup does this when run as "
        "root) or point TIERLINE_CHROMIUM at a chromium binary."
    )
    return str(CHROMIUM)


def number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


async def open_console(browser: Browser, url: str) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    return page, errors


async def assert_kafka_side(page: Page, workload: Workload) -> None:
    topics = page.locator("[data-testid=topics] tbody tr")
    await expect(topics).to_have_count(len(ALL_TOPICS), timeout=RENDER_TIMEOUT_MS)
    completed = page.locator('tr[data-topic="workitems.completed"] [data-field=messages]')
    posted = workload.items_last_month + workload.items_this_month
    assert number(await completed.inner_text()) >= posted
    # Both groups, one cell per partition, and every partition caught up (lag 0).
    for group in (CLASSIFIER_GROUP, METERING_GROUP):
        cells = page.locator(f'[data-group="{group}"] .cell')
        assert await cells.count() >= 1, group
    await page.wait_for_function(
        """() => {
            const cells = [...document.querySelectorAll('[data-group] .cell')];
            return cells.length > 0 && cells.every((cell) => cell.dataset.lag === '0');
        }""",
        timeout=RENDER_TIMEOUT_MS,
    )
    await expect(page.locator("#lag-chart svg polyline")).to_have_count(2)
    # The dead letter, with the error headers the classifier set.
    entry = page.locator(".dlq-entry", has_text=workload.poison_key)
    await expect(entry).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    await expect(entry).to_contain_text("not a valid CompletedWorkItem")
    await expect(entry).to_contain_text(re.compile(r"workitems\.completed \[\d+\] @\d+"))
    dlq = page.locator('[data-dlq="workitems.completed.dlq"] b')
    assert number(await dlq.inner_text()) >= 1


async def assert_business_side(page: Page, workload: Workload, api: Api) -> None:
    usage = await api.usage(workload.client_id, workload.open_period.key)
    await page.fill("#client-filter", workload.client_id)
    row = page.locator(f'[data-client="{workload.client_id}"]')
    await expect(row).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    await expect(row).to_contain_text(f"{workload.items_this_month} items")
    await expect(row).to_contain_text(f"{workload.open_period.key} · open")
    # The tier now is metering's (SPEC §5 usage API), computed independently of the console.
    await expect(row.locator(".tier-now")).to_have_text(
        f"{usage['tier']['name']} · {usage['tier']['reason']}"
    )
    await expect(row.locator("[data-field=weighted-units]")).to_have_text(
        f"{number(usage['weighted_units']):,.0f} wu"
    )
    projected = await row.locator(".tier-projected").inner_text()
    assert projected.split(" · ")[0] in {"Essential", "Professional", "Enterprise"}, projected
    assert await row.locator(".ladder svg rect").count() >= 4  # three tiers and the bar
    await page.fill("#client-filter", "")

    invoice = workload.invoice
    card = page.locator(f'[data-invoice="{invoice["invoice_id"]}"]')
    await expect(card).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    await expect(card.locator("[data-field=total]")).to_have_text(
        f"{invoice['total']} {invoice['currency']}"
    )
    await expect(card).to_contain_text(f"{invoice['tier']['name']} · {invoice['tier']['reason']}")
    lines = card.locator("tr.line")
    await expect(lines).to_have_count(len(invoice["lines"]))
    for index, line in enumerate(invoice["lines"]):
        await expect(lines.nth(index)).to_have_attribute("data-kind", line["kind"])
        await expect(lines.nth(index).locator("[data-field=amount]")).to_have_text(line["amount"])


async def test_console_renders_the_running_system(api: Api, run_id: str) -> None:
    workload = await run_workload(api, f"console-{run_id}")
    console = api.stack.url("console")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            # Without a key the page asks for one; a wrong key is refused; the admin key opens it.
            page, errors = await open_console(browser, f"{console}/")
            await expect(page.locator("#key-gate")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
            await expect(page.locator("#dashboard")).to_be_hidden()
            await page.fill("#key-input", "not-the-admin-key-at-all")
            await page.press("#key-input", "Enter")
            await expect(page.locator("#key-error")).to_have_text("That key is not known.")
            await page.fill("#key-input", api.stack.admin_key)
            await page.press("#key-input", "Enter")
            await expect(page.locator("#dashboard")).to_be_visible(timeout=RENDER_TIMEOUT_MS)
            await expect(page.locator("#key-gate")).to_be_hidden()

            await assert_kafka_side(page, workload)
            await assert_business_side(page, workload, api)

            # It is live: with work flowing, rates and the client's count move without a reload.
            trickle = asyncio.create_task(keep_posting(api, workload, batches=TRICKLE_BATCHES))
            try:
                await page.wait_for_function(
                    """() => Number(document.querySelector(
                        'tr[data-topic="workitems.completed"] [data-field=rate]'
                    ).textContent.replace(/,/g, '')) > 0""",
                    timeout=RENDER_TIMEOUT_MS,
                )
                await page.fill("#client-filter", workload.client_id)
                await expect(page.locator(f'[data-client="{workload.client_id}"]')).to_contain_text(
                    f"{workload.items_this_month + TRICKLE_BATCHES * TRICKLE_SIZE} items",
                    timeout=RENDER_TIMEOUT_MS,
                )
                await page.fill("#client-filter", "")
            finally:
                await trickle
            assert await page.locator("svg.spark polyline").count() >= 1
            await expect(page.locator("#status-dot")).to_have_class(re.compile(r"\bok\b"))
            assert not errors, errors

            height = await page.evaluate(
                "Math.ceil(document.querySelector('footer').getBoundingClientRect().bottom) + 6"
            )
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(
                path=str(SCREENSHOT),
                full_page=True,
                clip={"x": 0, "y": 0, "width": 1440, "height": min(height, SCREENSHOT_MAX_HEIGHT)},
            )
            assert 20_000 < SCREENSHOT.stat().st_size < 2_000_000

            # `?key=` opens it directly and is taken out of the address bar at once.
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            direct = await context.new_page()
            await direct.goto(f"{console}/?key={api.stack.admin_key}")
            await expect(
                direct.locator(f'[data-invoice="{workload.invoice["invoice_id"]}"]')
            ).to_be_visible(timeout=RENDER_TIMEOUT_MS)
            assert "key=" not in direct.url
            await context.close()
        finally:
            await browser.close()
