"""Every running service's /metrics, scraped after real traffic: the series operators and the
Grafana dashboard rely on exist, with values that match what was done.

The stack (all five services as processes) runs on the session's real Kafka and PostgreSQL; the
workload posts items for two months, sends one record that breaks the contract, and closes a
period, so counters, histograms and lag gauges all have something to say.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.e2e.conftest import Api
from tests.e2e.operations import Workload, run_workload
from tools.supervisor import SERVICES

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "tierline.json"
)


class Scrape:
    def __init__(self, samples: Iterable[Sample]) -> None:
        self.samples = list(samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        found = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert found, f"no sample {name}{labels}"
        return sum(found)

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


async def scrape(http: httpx.AsyncClient, url: str) -> Scrape:
    response = await http.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(s for f in text_string_to_metric_families(response.text) for s in f.samples)


async def scrape_all(api: Api) -> dict[str, Scrape]:
    return {name: await scrape(api.http, api.stack.url(name)) for name in SERVICES}


async def drained(api: Api, workload: Workload, timeout: float = 30) -> dict[str, Scrape]:
    """Scrape until the console has seen every group catch up with what was just written and
    the invoice published (billing publishes from its outbox, just after the close answers)."""
    async with asyncio.timeout(timeout):
        while True:
            scraped = await scrape_all(api)
            console = scraped["console"]
            lags = [s for s in console.samples if s.name == "tierline_consumer_lag"]
            # Records, not items: one record may carry a batch of a client's items.
            written = console.value("tierline_topic_messages_total", topic="workitems.completed")
            invoiced = console.value("tierline_topic_messages_total", topic="billing.invoices")
            counted = sum(
                s.value
                for s in scraped["metering"].samples
                if s.name == "tierline_metering_items_total"
            )
            caught_up = lags and sum(s.value for s in lags) == 0
            posted = workload.items_last_month + workload.items_this_month
            if caught_up and written >= 1 and counted >= posted and invoiced >= 1:
                return scraped
            await asyncio.sleep(0.5)


async def test_every_service_exports_what_operators_watch(api: Api, run_id: str) -> None:
    workload = await run_workload(api, f"metrics-{run_id}")
    await api.http.post(  # one invalid request: a 422 in the status breakdown
        f"{api.stack.url('intake')}/v1/work-items",
        json={"id": "x", "client_id": "NOT VALID"},
        headers=api.intake,
    )
    scraped = await drained(api, workload)
    posted = workload.items_last_month + workload.items_this_month

    intake = scraped["intake"]
    assert intake.value("tierline_intake_requests_total", status="202") >= 1
    assert intake.value("tierline_intake_requests_total", status="422") >= 1
    assert intake.value("tierline_intake_items_accepted_total") >= posted
    assert intake.value("tierline_intake_publish_seconds_count") >= 1

    classifier = scraped["classifier"]
    assert classifier.value("tierline_classifier_items_total", outcome="classified") >= posted
    assert classifier.value("tierline_dead_letters_total", topic="workitems.completed") >= 1
    assert classifier.value("tierline_classifier_batch_size_count") >= 1
    assert classifier.value("tierline_classifier_batch_size_sum") >= posted  # items
    assert (
        classifier.value("faststream_received_messages_total", handler="workitems.completed") >= 1
    )

    metering = scraped["metering"]
    # Counted by service line, never by client (a series per client id is unbounded).
    assert metering.value("tierline_metering_items_total") >= posted
    metered = [s for s in metering.samples if s.name == "tierline_metering_items_total"]
    assert all(set(s.labels) == {"service_line"} for s in metered)
    assert metering.value("tierline_metering_batch_size_count") >= 1
    assert metering.value("tierline_metering_db_seconds_count") >= 1
    assert 0 < metering.value("tierline_metering_db_seconds_sum") < 60
    assert metering.value("faststream_received_messages_total", handler="workitems.classified") >= 1

    billing = scraped["billing"]
    assert billing.value("tierline_billing_periods_closed_total", outcome="invoiced") >= 1
    invoiced = billing.value("tierline_billing_invoiced_amount_total", currency="USD")
    assert invoiced >= float(Decimal(workload.invoice["total"]))
    assert billing.value("tierline_billing_db_seconds_count", operation="close") >= 1
    assert billing.value("tierline_billing_published_total", topic="billing.invoices") >= 1

    console = scraped["console"]
    lag_series = {
        (s.labels["group"], s.labels["topic"], s.labels["partition"])
        for s in console.samples
        if s.name == "tierline_consumer_lag"
    }
    partitions = {
        (s.labels["topic"], s.labels["partition"])
        for s in console.samples
        if s.name == "tierline_consumer_lag"
    }
    assert {g for g, _, _ in lag_series} == {"tierline-classifier", "tierline-metering"}
    assert {t for t, _ in partitions} == {"workitems.completed", "workitems.classified"}
    assert len(lag_series) == len(partitions) >= 2  # one series per group's partition
    # Records out per topic, whichever producer wrote them, from the topics' end offsets: a
    # record carries one item or a batch of one client's items, so the workload's one request
    # of one client is at least a record in each, and the poison record one more in the first
    # (the classifier may write the whole request as one record: one batch, one client).
    assert console.value("tierline_topic_messages_total", topic="workitems.completed") >= 2
    assert console.value("tierline_topic_messages_total", topic="workitems.classified") >= 1
    assert console.value("tierline_topic_messages_total", topic="billing.invoices") >= 1
    assert console.value("tierline_dead_letter_messages", topic="workitems.completed.dlq") >= 1
    assert console.value("tierline_console_poll_errors_total") == 0
    assert console.value("tierline_console_poll_seconds_count") >= 2

    for name, service in scraped.items():  # each service's own registry has its own series
        assert any(n.startswith("tierline_") for n in service.names()), name


async def test_every_series_the_dashboard_queries_is_exported(api: Api, run_id: str) -> None:
    """A renamed metric would leave a Grafana panel silently empty: catch it here."""
    workload = await run_workload(api, f"dashboard-{run_id}")
    scraped = await drained(api, workload)
    exported = set().union(*(s.names() for s in scraped.values()))
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:tierline|faststream)_[a-z_]+", target["expr"])
    }
    assert len(queried) >= 15
    missing = queried - exported
    assert not missing, f"the dashboard queries series no service exports: {sorted(missing)}"
