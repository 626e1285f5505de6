"""Realistic demo and benchmark workloads: work items as ticketing systems would send them.

Pure: builds JSON-ready dicts; the caller posts them. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

QUEUES = (
    ("Customer Care", ("Refund request", "Order status inquiry", "Complaint about delivery")),
    ("Chat", ("Chat follow-up", "Billing question")),
    ("Data Entry", ("Key claim forms", "Index scanned contracts")),
    ("AP Invoices", ("Post supplier invoice", "Three-way match")),
    ("IT Service Desk", ("Password reset for user", "Laptop replacement", "VPN access")),
    ("Payroll", ("Payroll correction", "New hire onboarding")),
    ("Procurement", ("Raise purchase order", "Vendor onboarding")),
)
SOURCES = ("servicenow", "zendesk", "jira")


@dataclass(frozen=True)
class Mix:
    """How many items of each demo kind one client gets in a period."""

    customer_care: int = 600
    data_entry: int = 150
    ap_large: int = 12


#: When the demo's work was opened, before it was completed (SPEC §2 `opened_at`, §11): care
#: within 4 hours but every 5th a late one (80 % within 4 h); keying within a working day; large AP
#: invoices 30 to 48 hours before (more than a day elapsed, at most 19 hours of a 9-to-6 weekday
#: calendar: within 24 business hours).
CARE_LATE_EVERY = 5
CARE_HOURS = (0.5, 3.5)
CARE_LATE_HOURS = (6.0, 30.0)
KEYING_HOURS = (1.0, 8.0)
AP_HOURS = (30.0, 48.0)


def demo_items(
    client_id: str,
    start: datetime,
    end: datetime,
    mix: Mix,
    *,
    seed: int = 7,
    opened: bool = False,
) -> list[dict[str, object]]:
    """The demo workload of SPEC §6 example 3 (with the demo agreement's rules); with `opened`,
    each item also says when it was opened, for service levels (see CARE_HOURS and after)."""
    rng = random.Random(seed)
    span = (end - start).total_seconds() - 1

    def at() -> datetime:
        return start + timedelta(seconds=rng.uniform(0, span))

    def opened_at(item: dict[str, object], completed: datetime, hours: tuple[float, float]) -> None:
        if opened:  # drawn last, so a workload without opened_at stays the same
            item["opened_at"] = (completed - timedelta(hours=rng.uniform(*hours))).isoformat()

    items: list[dict[str, object]] = []
    for n in range(mix.customer_care):
        completed = at()
        item: dict[str, object] = {
            "id": f"{client_id}-cc-{n}",
            "client_id": client_id,
            "source": "zendesk",
            "completed_at": completed.isoformat(),
            "queue": "Customer Care",
            "title": rng.choice(QUEUES[0][1]),
            "handling_seconds": rng.randint(60, 500),
        }
        late = n % CARE_LATE_EVERY == CARE_LATE_EVERY - 1
        opened_at(item, completed, CARE_LATE_HOURS if late else CARE_HOURS)
        items.append(item)
    for n in range(mix.data_entry):
        completed = at()
        item = {
            "id": f"{client_id}-de-{n}",
            "client_id": client_id,
            "source": "servicenow",
            "completed_at": completed.isoformat(),
            "queue": "Data Entry",
            "title": "Key claim forms",
            "units": 1,
            "handling_seconds": rng.randint(300, 1200),
        }
        opened_at(item, completed, KEYING_HOURS)
        items.append(item)
    for n in range(mix.ap_large):
        completed = at()
        item = {
            "id": f"{client_id}-ap-{n}",
            "client_id": client_id,
            "source": "servicenow",
            "completed_at": completed.isoformat(),
            "queue": "AP Invoices",
            "title": "Post supplier invoice",
            "units": rng.randint(20, 80),
            "handling_seconds": rng.randint(3600, 9000),
            "tags": ["ap", "invoice"],
        }
        opened_at(item, completed, AP_HOURS)
        items.append(item)
    rng.shuffle(items)
    return items


def stream_items(
    clients: list[str],
    start: datetime,
    end: datetime,
    count: int,
    *,
    seed: int = 11,
    duplicate_ratio: float = 0.1,
    opened: bool = False,
) -> Iterator[dict[str, object]]:
    """A long realistic stream over many clients and queues, with re-sent duplicates; with
    `opened`, every item also says when its ticket was opened (up to two days before it was
    completed), drawn apart so the stream is otherwise the same."""
    rng = random.Random(seed)
    opened_rng = random.Random(seed + 1)
    span = (end - start).total_seconds() - 1
    sent: list[dict[str, object]] = []
    for n in range(count):
        if sent and rng.random() < duplicate_ratio:
            yield rng.choice(sent[-1000:])
            continue
        queue, titles = rng.choice(QUEUES)
        item: dict[str, object] = {
            "id": f"it-{seed}-{n}",
            "client_id": rng.choice(clients),
            "source": rng.choice(SOURCES),
            "completed_at": (start + timedelta(seconds=rng.uniform(0, span))).isoformat(),
            "queue": queue,
            "title": rng.choice(titles),
            "units": rng.choice((1, 1, 1, 2, 5, 25)),
            "handling_seconds": rng.choice((120, 300, 900, 2400, 4000)),
        }
        if opened:
            completed = datetime.fromisoformat(str(item["completed_at"]))
            ahead = timedelta(seconds=opened_rng.uniform(0, 2 * 86400))
            item["opened_at"] = (completed - ahead).isoformat()
        sent.append(item)
        yield item
