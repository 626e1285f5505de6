"""The items API end to end (SPEC §10 "Items"): items posted to intake, classified and metered by
the running services, then read back from metering as documents, a page and a CSV export —
each as intake received it, first copy only, classified by the client's agreement."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from shared.domain.periods import Period, period_bounds, period_of
from tests.e2e.conftest import Api
from tests.spec_example import spec_agreement


def last_month() -> Period:
    return period_of(datetime.now(UTC), "UTC").previous()


async def metered(api: Api, client: str, period: str, count: int) -> list[dict[str, Any]]:
    """The period's items once `count` of them are metered (a bounded wait)."""
    url = f"{api.stack.url('metering')}/v1/items"
    for _ in range(300):
        response = await api.http.get(
            url, params={"client_id": client, "period": period}, headers=api.admin
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["items"]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"{client}: never {count} items metered")


async def test_posted_items_read_back_as_metered_and_classified(api: Api, run_id: str) -> None:
    client = f"items-{run_id}"
    period = last_month()
    start, _ = period_bounds(period, "America/New_York")
    assert (await api.put_agreement(spec_agreement(client))).status_code == 200
    # Written with another offset: read back in UTC.
    completed = (start + timedelta(days=3, hours=12, milliseconds=250)).astimezone(
        timezone(timedelta(hours=2))
    )
    keyed = {
        "id": "DE/1",
        "client_id": client,
        "source": "zendesk",
        "completed_at": completed.isoformat(),
        "opened_at": (completed - timedelta(hours=5)).isoformat(),
        "queue": "Data Entry",
        "units": 250,
        "handling_seconds": 900,
    }
    mystery = {
        "id": "M-1",
        "client_id": client,
        "source": "jira",
        "completed_at": (start + timedelta(days=4)).isoformat(),
        "queue": "Mystery",
    }
    resent = {**keyed, "units": 7, "source": "servicenow"}  # a later copy: not what counts
    posted = datetime.now(UTC)
    assert await api.post_items([keyed, mystery]) == 2
    assert await api.post_items([resent]) == 1

    listed = await metered(api, client, period.key, 2)
    assert [item["id"] for item in listed] == ["DE/1", "M-1"]
    first, unclassified = listed
    utc = completed.astimezone(UTC)
    assert {k: v for k, v in first.items() if k != "received_at"} == {
        "client_id": client,
        "id": "DE/1",
        "source": "zendesk",
        "completed_at": utc.strftime("%Y-%m-%dT%H:%M:%S.25Z"),
        "opened_at": (utc - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S.25Z"),
        "period": period.key,
        "late": False,
        "status": "classified",
        "service_line": "data_entry",
        "complexity": "standard",
        "rule_id": "keying",
        "agreement_version": 1,
        "units": 250,
        "handling_seconds": 900,
        "weighted_units": "500",
        "history": [],
    }
    # When intake received it: during this test.
    received = datetime.fromisoformat(first["received_at"])
    assert first["received_at"].endswith("Z")
    assert posted - timedelta(seconds=1) <= received <= datetime.now(UTC)
    assert (unclassified["status"], unclassified["service_line"], unclassified["rule_id"]) == (
        "unclassified",
        None,
        None,
    )
    assert unclassified["weighted_units"] == "0"

    metering = api.stack.url("metering")
    one = await api.http.get(f"{metering}/v1/items/{client}/DE%2F1", headers=api.admin)
    assert one.status_code == 200 and one.json() == first
    exported = await api.http.get(
        f"{metering}/v1/items",
        params={"client_id": client, "period": period.key},
        headers={**api.admin, "Accept": "text/csv"},
    )
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert [row[1] for row in rows] == ["id", "DE/1", "M-1"]
