"""The console's pure parts (lag, rates, dead letters, the usage projection) and its settings."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.console import store
from services.console.app import ConsoleSettings
from services.console.monitor import (
    History,
    OffsetSample,
    dead_letter,
    kafka_overview,
    latest_dead_letters,
    messages_in,
    partition_lags,
    rate_between,
)
from services.console.redrive import DeadLetterRecord
from services.console.usage import OpenPeriod, client_usage, projected_weighted_units
from services.console.watch import KafkaProbe, KafkaWatch
from shared.domain.agreement.agreement import parse_agreement
from shared.domain.periods import Period, period_bounds
from shared.infra.kafka_connection import KafkaConnection
from shared.ledger.reads import ClassCount
from tests.spec_example import spec_agreement
from tools.supervisor import REPO_ROOT

GROUPS = {"tierline-classifier": ("workitems.completed",)}


def sample(
    at: float, ends: dict[int, int], committed: dict[int, int] | None = None
) -> OffsetSample:
    return OffsetSample(
        at=at,
        starts={("workitems.completed", p): 0 for p in ends},
        ends={("workitems.completed", p): end for p, end in ends.items()},
        committed={
            "tierline-classifier": {
                ("workitems.completed", p): o for p, o in (committed or {}).items()
            }
        },
    )


def test_lag_is_end_minus_committed_and_everything_where_nothing_is_committed() -> None:
    lags = partition_lags(
        sample(0, {0: 100, 1: 40}, {0: 90}), "tierline-classifier", GROUPS["tierline-classifier"]
    )
    assert [(p.partition, p.committed, p.lag) for p in lags] == [(0, 90, 10), (1, None, 40)]


def test_lag_counts_only_the_group_s_topics_and_never_goes_negative() -> None:
    lags = partition_lags(sample(0, {0: 5}, {0: 7}), "tierline-classifier", ("other.topic",))
    assert lags == []
    (lag,) = partition_lags(
        sample(0, {0: 5}, {0: 7}), "tierline-classifier", ("workitems.completed",)
    )
    assert lag.lag == 0


def test_rate_comes_from_end_offset_deltas() -> None:
    assert (
        rate_between(sample(10, {0: 100, 1: 0}), sample(12, {0: 150, 1: 30}), "workitems.completed")
        == 40
    )
    assert rate_between(sample(10, {0: 100}), sample(10, {0: 150}), "workitems.completed") == 0


def test_history_keeps_its_capacity_and_rates_over_the_window() -> None:
    history = History(capacity=3)
    assert history.rate("workitems.completed") == 0.0
    for second, end in enumerate((0, 10, 30, 60)):
        history.add(sample(second, {0: end}))
    assert [s.at for s in history.samples] == [1, 2, 3]
    assert history.rate("workitems.completed") == 25.0  # (60 - 10) / 2 s
    assert history.rate_series("workitems.completed") == [(2, 20.0), (3, 30.0)]
    assert history.lag_series("tierline-classifier", ("workitems.completed",)) == [
        (1, 10),
        (2, 30),
        (3, 60),
    ]


def test_dead_letter_decoding_keeps_the_error_headers_and_survives_bad_bytes() -> None:
    entry = (
        dead_letter(
            DeadLetterRecord(
                topic="workitems.completed.dlq",
                partition=2,
                offset=7,
                timestamp_ms=1_790_000_000_000,
                key=b"acme",
                value=b"\xff" + b"x" * 400,
                headers=(
                    ("error", b"not a valid CompletedWorkItem"),
                    ("origin_topic", b"workitems.completed"),
                    ("origin_partition", b"3"),
                    ("origin_offset", b"not-a-number"),
                ),
            )
        )
        .entry()
        .model_dump()
    )
    assert entry["error"] == "not a valid CompletedWorkItem"
    assert entry["original_topic"] == "workitems.completed"
    assert entry["original_partition"] == 3
    assert entry["original_offset"] is None
    assert entry["original_item"] is None  # a whole record
    assert entry["key"] == "acme"
    assert entry["value_preview"].startswith("\ufffd") and entry["value_preview"].endswith("…")
    assert entry["time"].startswith("2026-")


def test_a_dead_letter_of_one_item_of_a_batch_record_shows_its_item() -> None:
    def entry(item: bytes) -> Any:
        return (
            dead_letter(
                DeadLetterRecord(
                    topic="workitems.completed.dlq",
                    partition=0,
                    offset=8,
                    timestamp_ms=1_790_000_000_000,
                    key=b"acme",
                    value=b'{"id": "a-3"}',
                    headers=(
                        ("origin_topic", b"workitems.completed"),
                        ("origin_partition", b"1"),
                        ("origin_offset", b"41"),
                        ("origin_item", item),
                    ),
                )
            )
            .entry()
            .model_dump()
        )

    shown = entry(b"3")
    assert (shown["original_offset"], shown["original_item"]) == (41, 3)
    assert shown["headers"]["origin_item"] == "3"
    assert entry(b"-1")["original_item"] is None  # not an index


def test_latest_dead_letters_are_newest_first() -> None:
    entries = [
        dead_letter(
            DeadLetterRecord(
                topic="t.dlq",
                partition=0,
                offset=n,
                timestamp_ms=1000 + n,
                key=None,
                value=b"",
                headers=(),
            )
        )
        for n in range(5)
    ]
    assert [e.offset for e in latest_dead_letters(entries, 2)] == [4, 3]


def test_overview_lists_topics_groups_and_dead_letter_topics() -> None:
    history = History(capacity=10)
    assert (
        kafka_overview(
            history, topics=["a"], groups=GROUPS, dead_letter_topics=[], dead_letters={}, error=None
        ).model_dump()["topics"]
        == []
    )
    history.add(sample(0, {0: 10, 1: 0}, {0: 10}))
    history.add(sample(1, {0: 12, 1: 3}, {0: 12}))
    overview = kafka_overview(
        history,
        topics=["workitems.completed"],
        groups=GROUPS,
        dead_letter_topics=["workitems.completed.dlq"],
        dead_letters={},
        error=None,
    ).model_dump()
    (topic,) = overview["topics"]
    assert (topic["partitions"], topic["messages"], topic["rate"]) == (2, 15, 5.0)
    (group,) = overview["groups"]
    assert group["lag"] == 3 and len(group["partitions"]) == 2
    assert overview["dead_letters"] == [
        {"topic": "workitems.completed.dlq", "messages": 0, "entries": []}
    ]
    assert messages_in(history.samples[-1], "workitems.completed") == 15


def test_watch_exports_lag_per_partition_and_topic_counters() -> None:
    registry = CollectorRegistry()
    watch = KafkaWatch(
        KafkaProbe(
            KafkaConnection.plaintext("127.0.0.1:1"),
            topics=["workitems.completed"],
            groups=list(GROUPS),
        ),
        groups=GROUPS,
        dead_letter_topics=["workitems.completed.dlq"],
        interval=1,
        history_seconds=60,
        dead_letters_shown=5,
        registry=registry,
    )
    watch.history.add(sample(0, {0: 10, 1: 4}, {0: 7}))
    text = generate_latest(registry).decode()
    lag = (
        'tierline_consumer_lag{group="tierline-classifier",partition="%d",'
        'topic="workitems.completed"}'
    )
    assert f"{lag % 0} 3.0" in text
    assert f"{lag % 1} 4.0" in text
    assert 'tierline_topic_messages_total{topic="workitems.completed"} 14.0' in text
    assert 'tierline_dead_letter_messages{topic="workitems.completed.dlq"} 0.0' in text


# --- the usage projection -----------------------------------------------------------------------


def acme_in_november(counts: list[ClassCount], *, elapsed: float) -> tuple[OpenPeriod, datetime]:
    """acme's open November 2026 (agreement version 3) with `counts`, and the instant
    `elapsed` (0..1) of the way through it."""
    agreement = parse_agreement(spec_agreement("acme")).with_version(3)
    period = Period(2026, 11)
    start, end = period_bounds(period, "America/New_York")
    return OpenPeriod(agreement, period, start, end, counts), start + (end - start) * elapsed


def card_of(open_period: OpenPeriod, now: datetime) -> dict[str, Any]:
    return client_usage(
        client_id="acme", open_period=open_period, now=now, closed=False
    ).model_dump()


def test_projected_tier_can_differ_from_the_tier_now() -> None:
    """9 complex IT items at 90 % of the month → 10 at its end: min_items reached, scope wins."""
    counts = [
        ClassCount("customer_support", "basic", 200, 200, 0, 0),
        ClassCount("it_support", "complex", 9, 9, 0, 0),
        ClassCount("unclassified", "none", 4, 4, 0, 0),
    ]
    card = card_of(*acme_in_november(counts, elapsed=0.9))
    assert card["tier"] == {"name": "Essential", "reason": "volume"}
    assert card["weighted_units"] == "245"
    assert card["projected"]["tier"] == {"name": "Professional", "reason": "scope"}
    assert Decimal(card["projected"]["weighted_units"]) == 222 + 50
    assert (card["items"], card["unclassified_items"], card["agreement_version"]) == (209, 4, 3)
    assert [t["name"] for t in card["tiers"]] == ["Essential", "Professional", "Enterprise"]
    assert card["tiers"][0] == {"name": "Essential", "up_to": "1000", "fee": "10000.00"}


def test_the_ranking_figure_is_the_card_s_projected_weighted_units() -> None:
    """The overview ranks every client with `projected_weighted_units` and renders only the
    busiest: the ranking must be the figure the card shows."""
    counts = [
        ClassCount("customer_support", "basic", 211, 211, 0, 0),
        ClassCount("data_entry", "standard", 7, 900, 0, 0),
        ClassCount("it_support", "complex", 9, 9, 0, 0),
        ClassCount("unclassified", "none", 4, 4, 0, 0),
    ]
    open_period, now = acme_in_november(counts, elapsed=0.37)
    card = card_of(open_period, now)
    figure = projected_weighted_units(open_period, now)
    assert figure == Decimal(card["projected"]["weighted_units"]) > 0
    assert projected_weighted_units(replace(open_period, agreement=None), now) == 0


class AgreementRows:
    """A connection holding billing.agreements rows; it counts the bodies it hands out."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.bodies_read = 0

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if "max(version)" in query:
            latest: dict[str, int] = {}
            for row in self.rows:
                latest[row["client_id"]] = max(latest.get(row["client_id"], 0), row["version"])
            return [{"client_id": c, "version": v} for c, v in latest.items()]
        wanted = set(zip(args[0], args[1], strict=True))
        found = [r for r in self.rows if (r["client_id"], r["version"]) in wanted]
        self.bodies_read += len(found)
        return found


async def test_each_agreement_version_is_read_and_parsed_once() -> None:
    body = {**parse_agreement(spec_agreement("acme")).with_version(1).to_wire()}
    conn = AgreementRows([{"client_id": "acme", "version": 1, "body": body}])
    cache: store.AgreementCache = {}
    first = await store.current_agreements(conn, cache)  # type: ignore[arg-type]
    again = await store.current_agreements(conn, cache)  # type: ignore[arg-type]
    assert first["acme"].version == again["acme"].version == 1
    assert conn.bodies_read == 1
    conn.rows.append({"client_id": "acme", "version": 2, "body": {**body, "version": 2}})
    conn.rows.append({"client_id": "broken", "version": 1, "body": {"nonsense": True}})
    latest = await store.current_agreements(conn, cache)  # type: ignore[arg-type]
    assert latest["acme"].version == 2
    assert "broken" not in latest  # one unreadable row does not blank the page
    assert set(cache) == {("acme", 2), ("broken", 1)}  # superseded versions are dropped
    assert conn.bodies_read == 3


def test_a_client_without_agreement_has_counts_but_no_tier() -> None:
    period = Period(2026, 11)
    start, end = period_bounds(period, "UTC")
    card = client_usage(
        client_id="stray",
        open_period=OpenPeriod(None, period, start, end, [ClassCount("hr", "basic", 3, 3, 0, 0)]),
        now=end,
        closed=False,
    ).model_dump()
    assert (card["items"], card["tier"], card["projected"]["tier"], card["tiers"]) == (
        3,
        None,
        None,
        [],
    )
    assert card["weighted_units"] == "0"


# --- settings -----------------------------------------------------------------------------------


def test_console_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "DATABASE_URL": "postgresql://u@h/db",
        "TIERLINE_ADMIN_KEY": "admin-key-0123456789",
        "TIERLINE_INTAKE_KEYS": "zendesk=k1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = ConsoleSettings()
    assert (settings.console_port, settings.console_poll_seconds, settings.database_pool_size) == (
        8085,
        2,
        2,
    )


def test_a_bad_console_variable_stops_it_naming_the_variable() -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
        "TIERLINE_ADMIN_KEY": "admin-key-0123456789",
        "TIERLINE_INTAKE_KEYS": "zendesk=k1",
        "CONSOLE_POLL_SECONDS": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.console"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "configuration error: CONSOLE_POLL_SECONDS" in result.stderr
