"""Dead-letter redrive's pure parts (SPEC §12): which dead letters a request chooses, what becomes
of each, the request's validation, and the CLI's parsing and drawing."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from services.console.deadletters import DeadLetters, ListedDeadLetter, Page
from services.console.redrive import (
    REDRIVEN_FROM,
    DeadLetterRecord,
    Decision,
    Filter,
    Origin,
    Outcome,
    Position,
    RedriveMark,
    UnknownTopic,
    mark_of,
    parse_position,
    plan,
    republished_headers,
    resolve_topic,
    tally,
    value_preview,
)
from services.console.redrive_api import RedriveRequest, dead_letters_of, router
from shared.infra.auth import KeyRing, admin_name
from tools.cli import main as tierline
from tools.dlq_cli import (
    admin_key,
    origin_text,
    parse_offset,
    progress_bar,
    run_redrive,
    table,
)

DLQ = "workitems.completed.dlq"
ORIGIN = "workitems.completed"
CLIENT_KEYS = {"c" * 20: "acme"}


def dead_letter(
    offset: int,
    *,
    partition: int = 0,
    origin_offset: int | None = None,
    origin_topic: str = ORIGIN,
    origin_item: str | None = None,
    error: str = "ValueError: boom",
    extra: Sequence[tuple[str, bytes]] = (),
) -> DeadLetterRecord:
    """A dead letter with the headers `shared.infra.kafka.dead_letter` writes (`origin_item`: of
    one item of a batch record)."""
    headers = [
        *extra,
        ("error", error.encode()),
        ("error_type", b"ValueError"),
        ("origin_topic", origin_topic.encode()),
        ("origin_partition", str(partition).encode()),
        ("origin_offset", str(offset if origin_offset is None else origin_offset).encode()),
        ("origin_timestamp", b"1764000000000"),
        *([("origin_item", origin_item.encode())] if origin_item is not None else []),
    ]
    return DeadLetterRecord(
        topic=DLQ,
        partition=partition,
        offset=offset,
        timestamp_ms=1_764_000_000_000,
        key=b"acme",
        value=b'{"id":"1"}',
        headers=tuple(headers),
    )


def mark(record: DeadLetterRecord) -> RedriveMark:
    assert record.origin is not None
    return RedriveMark(
        dlq_topic=record.topic,
        dead_letter=record.position,
        origin=record.origin,
        redriven_at=datetime(2026, 12, 1, tzinfo=UTC),
        by="admin:0123abcd",
        published=Position(0, 999),
    )


def chosen_plan(
    chosen: Sequence[Position],
    records: Sequence[DeadLetterRecord],
    marks: Sequence[RedriveMark] = (),
) -> list[Decision]:
    found = {r.position: r for r in records}
    return plan(chosen, found, marks, dlq_topic=DLQ, origin_topic=ORIGIN)


# --- topics and positions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("workitems.completed", ("workitems.completed.dlq", "workitems.completed")),
        ("workitems.completed.dlq", ("workitems.completed.dlq", "workitems.completed")),
        ("agreements", ("agreements.dlq", "agreements")),
        ("workitems.classified.dlq", ("workitems.classified.dlq", "workitems.classified")),
    ],
)
def test_a_topic_is_named_by_itself_or_by_its_dead_letter_topic(
    name: str, expected: tuple[str, str]
) -> None:
    assert resolve_topic(name) == expected


@pytest.mark.parametrize(
    "name", ["billing.invoices", "workitems.unclassified", "agreements.dlq.dlq", "", "x\x00"]
)
def test_a_topic_nothing_consumes_has_no_dead_letters(name: str) -> None:
    with pytest.raises(UnknownTopic, match="has no dead letters"):
        resolve_topic(name)


def test_positions_are_partition_colon_offset() -> None:
    assert parse_position("3:42") == Position(3, 42)
    assert str(Position(3, 42)) == "3:42"
    for bad in ("3", "3:", ":4", "-1:4", "a:b", "٣:٣", "3:4:5", "99999999999:1"):
        with pytest.raises(ValueError):
            parse_position(bad)


def test_the_origin_comes_from_the_headers_or_is_none() -> None:
    assert dead_letter(7, partition=2).origin == Origin(ORIGIN, 2, 7)
    missing = DeadLetterRecord(DLQ, 0, 1, 0, None, None, (("error", b"x"),))
    assert missing.origin is None
    garbage = DeadLetterRecord(
        DLQ,
        0,
        1,
        0,
        None,
        None,
        (("origin_topic", ORIGIN.encode()), ("origin_partition", b"x"), ("origin_offset", b"1")),
    )
    assert garbage.origin is None


def test_an_item_dead_letter_names_its_item_and_a_malformed_index_makes_its_origin_malformed() -> (
    None
):
    assert dead_letter(7, origin_item="3").origin == Origin(ORIGIN, 0, 7, 3)
    assert dead_letter(7, origin_item="0").origin == Origin(ORIGIN, 0, 7, 0)
    assert str(Origin(ORIGIN, 0, 7, 3)) == f"{ORIGIN}/0/7 item 3"
    assert dead_letter(7).origin == Origin(ORIGIN, 0, 7, None)  # the whole record
    for bad in ("", "x", "-1", "+1", " 1", "1.0", "٣", "2147483648", "9" * 20):
        record = dead_letter(7, origin_item=bad)
        assert record.origin is None, bad
        [decision] = chosen_plan([Position(0, 7)], [record])
        assert decision.outcome is Outcome.FAILED
        assert "origin_item header is not an item index" in (decision.reason or "")
    assert dead_letter(7, origin_item="2147483647").origin == Origin(ORIGIN, 0, 7, 2**31 - 1)


def test_filters_combine_and_error_contains_ignores_case() -> None:
    record = dead_letter(1, partition=1, error="ContractError: not a valid CompletedWorkItem")
    assert Filter().matches(record)
    assert Filter(error_contains="completedworkitem").matches(record)
    assert not Filter(error_contains="agreement").matches(record)
    assert Filter(error_type="ValueError", partition=1).matches(record)
    assert not Filter(error_type="ValueError", partition=0).matches(record)
    assert not Filter(error_type="contract").matches(record)


# --- what becomes of each chosen dead letter --------------------------------------------------


def test_fresh_dead_letters_are_to_be_published_in_the_order_chosen() -> None:
    records = [dead_letter(1), dead_letter(2)]
    decisions = chosen_plan([Position(0, 2), Position(0, 1), Position(0, 2)], records)
    assert [(d.position, d.outcome) for d in decisions] == [
        (Position(0, 2), None),
        (Position(0, 1), None),
    ]


def test_a_dead_letter_already_redriven_is_skipped_naming_when_and_by_whom() -> None:
    record = dead_letter(1)
    [decision] = chosen_plan([Position(0, 1)], [record], [mark(record)])
    assert decision.outcome is Outcome.SKIPPED
    assert decision.reason is not None
    assert "already redriven at 2026-12-01" in decision.reason
    assert "admin:0123abcd" in decision.reason


def test_another_copy_of_a_redriven_origin_record_is_skipped() -> None:
    first, copy = dead_letter(1, origin_offset=50), dead_letter(2, origin_offset=50)
    assert mark_of(copy, [mark(first)]) == mark(first)
    [decision] = chosen_plan([Position(0, 2)], [first, copy], [mark(first)])
    assert decision.outcome is Outcome.SKIPPED
    assert decision.reason is not None and "its origin record" in decision.reason


def test_two_copies_of_one_origin_in_one_request_publish_once() -> None:
    records = [dead_letter(1, origin_offset=50), dead_letter(2, origin_offset=50)]
    decisions = chosen_plan([Position(0, 1), Position(0, 2)], records)
    assert [d.outcome for d in decisions] == [None, Outcome.SKIPPED]


def test_two_items_of_one_batch_record_are_two_origins_each_redriven_once() -> None:
    first = dead_letter(1, origin_offset=50, origin_item="0")
    fourth = dead_letter(2, origin_offset=50, origin_item="3")
    whole = dead_letter(3, origin_offset=50)
    decisions = chosen_plan(
        [Position(0, 1), Position(0, 2), Position(0, 3)], [first, fourth, whole]
    )
    assert [d.outcome for d in decisions] == [None, None, None]
    assert mark_of(fourth, [mark(first)]) is None
    assert mark_of(whole, [mark(first)]) is None
    copy = dead_letter(4, origin_offset=50, origin_item="3")  # the same item dead-lettered again
    assert mark_of(copy, [mark(first), mark(fourth)]) == mark(fourth)
    [skipped] = chosen_plan([Position(0, 4)], [copy], [mark(first), mark(fourth)])
    assert skipped.outcome is Outcome.SKIPPED
    assert skipped.reason is not None and "its origin item 3, from" in skipped.reason
    twice = chosen_plan([Position(0, 2), Position(0, 4)], [fourth, copy])
    assert [d.outcome for d in twice] == [None, Outcome.SKIPPED]


def test_a_missing_record_or_a_foreign_origin_fails_with_its_reason() -> None:
    foreign = dead_letter(2, origin_topic="billing.invoices")
    other = dead_letter(3, origin_topic="agreements")
    no_origin = DeadLetterRecord(DLQ, 0, 4, 0, None, b"{}", (("error", b"x"),))
    tombstone = DeadLetterRecord(DLQ, 0, 5, 0, b"acme", None, dead_letter(5).headers)
    decisions = chosen_plan(
        [Position(0, 1), Position(0, 2), Position(0, 3), Position(0, 4), Position(0, 5)],
        [foreign, other, no_origin, tombstone],
    )
    assert [d.outcome for d in decisions] == [Outcome.FAILED] * 5
    reasons = [d.reason or "" for d in decisions]
    assert "holds no record at 0:1" in reasons[0]
    assert "not a topic Tierline consumes" in reasons[1]
    assert "is not 'workitems.completed'" in reasons[2]
    assert "missing or malformed" in reasons[3]
    assert "tombstone" in reasons[4]


def test_a_redriven_record_keeps_its_own_headers_and_names_its_dead_letter() -> None:
    record = dead_letter(
        7, partition=1, origin_item="2", extra=[("trace", b"t1"), (REDRIVEN_FROM, b"old/0/1")]
    )
    assert republished_headers(record) == [
        ("trace", b"t1"),
        (REDRIVEN_FROM, b"workitems.completed.dlq/1/7"),
    ]


def test_tally_counts_each_outcome() -> None:
    counts = tally([Outcome.REDRIVEN, Outcome.REDRIVEN, Outcome.SKIPPED, Outcome.FAILED])
    assert (counts.redriven, counts.skipped, counts.failed, counts.would_redrive) == (2, 1, 1, 0)


def test_the_value_preview_is_cut_and_says_so() -> None:
    assert value_preview(b"abc", 5) == ("abc", True)
    assert value_preview(b"abcdefgh", 5) == ("abcde", False)
    assert value_preview(b"\xff", 5) == ("\ufffd", True)


# --- the request --------------------------------------------------------------------------------


def test_a_request_chooses_records_or_all_never_both_nor_neither() -> None:
    RedriveRequest.model_validate({"records": [{"partition": 0, "offset": 1}]})
    RedriveRequest.model_validate({"all": True, "error_contains": "x", "cursor": "0:5"})
    bad_requests: list[dict[str, Any]] = [
        {},
        {"all": False},
        {"all": True, "records": [{"partition": 0, "offset": 1}]},
        {"records": [{"partition": 0, "offset": 1}], "error_contains": "x"},
        {"records": []},
        {"records": [{"partition": "0", "offset": 1}]},
        {"records": [{"partition": 0, "offset": -1}]},
        {"all": True, "cursor": "0"},
        {"all": True, "limit": 1001},
        {"all": "yes"},
        {"all": True, "surprise": 1},
    ]
    for bad in bad_requests:
        with pytest.raises(ValidationError):
            RedriveRequest.model_validate(bad)


class FakeDeadLetters:
    """Stands in for DeadLetters: records what it was asked, answers from a list."""

    def __init__(self, records: list[DeadLetterRecord]) -> None:
        self.records = records
        self.asked: list[Any] = []

    async def page(self, dlq_topic: str, chosen: Filter, **kwargs: Any) -> Page:
        self.asked.append((dlq_topic, chosen, kwargs))
        entries = [ListedDeadLetter(r, None) for r in self.records if chosen.matches(r)]
        return Page(entries, None, len(self.records))

    async def show(self, dlq_topic: str, position: Position) -> ListedDeadLetter | None:
        found = [r for r in self.records if r.position == position]
        return ListedDeadLetter(found[0], None) if found else None

    async def redrive(
        self, dlq_topic: str, origin_topic: str, chosen: Sequence[Position], **flags: Any
    ) -> list[Decision]:
        """Answers as DeadLetters.redrive would; `flags` are its `by` and `dry_run`."""
        self.asked.append((dlq_topic, origin_topic, list(chosen), flags["by"], flags["dry_run"]))
        decisions = chosen_plan(chosen, self.records)
        return [
            Decision(d.position, Outcome.REDRIVEN, None, d.record, published=Position(0, 100))
            if d.outcome is None
            else d
            for d in decisions
        ]


@pytest.fixture
def fake() -> FakeDeadLetters:
    return FakeDeadLetters([dead_letter(1), dead_letter(2, error="KeyError: 'source'")])


@pytest.fixture
async def client(fake: FakeDeadLetters) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.keys = KeyRing(
        admin_keys=["a" * 20, "b" * 20], intake_keys={"k" * 20: "jira"}, client_keys=CLIENT_KEYS
    )
    app.include_router(router)
    app.dependency_overrides[dead_letters_of] = lambda: cast(DeadLetters, fake)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://console",
        headers={"Authorization": f"Bearer {'a' * 20}"},
    ) as http:
        yield http


async def test_the_routes_answer_with_the_documented_shapes(
    client: httpx.AsyncClient, fake: FakeDeadLetters
) -> None:
    listed = await client.get(f"/v1/dead-letters/{ORIGIN}", params={"error_contains": "source"})
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["dlq_topic"] == DLQ and body["next_cursor"] is None
    assert [(e["offset"], e["error"], e["redriven"]) for e in body["entries"]] == [
        (2, "KeyError: 'source'", None)
    ]
    assert body["entries"][0]["origin"] == {
        "topic": ORIGIN,
        "partition": 0,
        "offset": 2,
        "item": None,
    }

    shown = await client.get(f"/v1/dead-letters/{DLQ}/0/1")
    assert shown.status_code == 200
    assert shown.json()["headers"]["origin_offset"] == "1"
    assert shown.json()["value_preview"] == '{"id":"1"}'

    redriven = await client.post(
        f"/v1/dead-letters/{ORIGIN}/redrive",
        json={"records": [{"partition": 0, "offset": 1}, {"partition": 0, "offset": 9}]},
    )
    assert redriven.status_code == 200, redriven.text
    answer = redriven.json()
    assert (answer["chosen"], answer["redriven"], answer["failed"]) == (2, 1, 1)
    assert answer["results"][0]["published"] == {"topic": ORIGIN, "partition": 0, "offset": 100}
    assert fake.asked[-1][3] == admin_name("a" * 20)


async def test_a_dead_letter_of_one_item_of_a_batch_record_names_the_item_in_its_origin(
    client: httpx.AsyncClient, fake: FakeDeadLetters
) -> None:
    fake.records.append(dead_letter(3, origin_offset=50, origin_item="3"))
    shown = await client.get(f"/v1/dead-letters/{DLQ}/0/3")
    assert shown.status_code == 200, shown.text
    assert shown.json()["origin"] == {"topic": ORIGIN, "partition": 0, "offset": 50, "item": 3}
    assert shown.json()["headers"]["origin_item"] == "3"
    listed = (await client.get(f"/v1/dead-letters/{ORIGIN}")).json()["entries"]
    assert [e["origin"]["item"] for e in listed] == [None, None, 3]


async def test_a_redrive_is_recorded_under_the_audit_name_of_the_admin_key_used(
    client: httpx.AsyncClient, fake: FakeDeadLetters
) -> None:
    """Either key of a rotation works; the audit entry names the one used (SPEC §13), never it."""
    response = await client.post(
        f"/v1/dead-letters/{ORIGIN}/redrive",
        json={"records": [{"partition": 0, "offset": 2}]},
        headers={"Authorization": f"Bearer {'b' * 20}"},
    )
    assert response.status_code == 200, response.text
    by = fake.asked[-1][3]
    assert by == "admin:" + hashlib.sha256(b"b" * 20).hexdigest()[:8]
    assert "b" * 20 not in by


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "names"),
    [
        ("get", "/v1/dead-letters/billing.invoices", None, 404, "billing.invoices"),
        ("get", f"/v1/dead-letters/{ORIGIN}?limit=0", None, 422, "limit"),
        ("get", f"/v1/dead-letters/{ORIGIN}?cursor=7", None, 422, "cursor"),
        ("get", f"/v1/dead-letters/{ORIGIN}?redriven=maybe", None, 422, "redriven"),
        ("get", f"/v1/dead-letters/{ORIGIN}?error_contains=", None, 422, "error_contains"),
        ("get", f"/v1/dead-letters/{ORIGIN}/0/-1", None, 422, "offset"),
        ("get", f"/v1/dead-letters/{ORIGIN}/0/5", None, 404, "no record at 0:5"),
        ("get", "/v1/dead-letters/nope/0/5", None, 404, "nope"),
        ("post", f"/v1/dead-letters/{ORIGIN}/redrive", {}, 422, "records or all"),
        ("post", "/v1/dead-letters/usage.alerts/redrive", {"all": True}, 404, "usage.alerts"),
    ],
)
async def test_a_malformed_parameter_is_a_4xx_naming_it(
    client: httpx.AsyncClient, method: str, path: str, body: Any, status: int, names: str
) -> None:
    response = await client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    assert names in response.text


async def test_a_client_key_or_no_key_may_not_redrive(client: httpx.AsyncClient) -> None:
    path = f"/v1/dead-letters/{ORIGIN}/redrive"
    body = {"all": True}
    nobody = await client.post(path, json=body, headers={"Authorization": ""})
    assert nobody.status_code == 401
    wrong = await client.post(path, json=body, headers={"Authorization": f"Bearer {'k' * 20}"})
    assert wrong.status_code == 403


@pytest.mark.parametrize("key", ["k" * 20, "c" * 20])
@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"all": "yes"}'])
async def test_a_key_that_may_not_redrive_is_403_whatever_the_body(
    client: httpx.AsyncClient, fake: FakeDeadLetters, key: str, body: bytes
) -> None:
    """Permission comes before the body (SPEC §13): not a 422 for a body it will never use."""
    response = await client.post(
        f"/v1/dead-letters/{ORIGIN}/redrive",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 403, response.text
    assert fake.asked == []


async def test_a_malformed_redrive_body_is_a_422_naming_where(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/dead-letters/{ORIGIN}/redrive",
        content=b'{"records": [{"partition": 0, "offset": -1}]}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "records", 0, "offset"]
    for broken in (b"{", b"\xbd]\xf2a\x80", b'{"all": "\xff"}'):
        response = await client.post(f"/v1/dead-letters/{ORIGIN}/redrive", content=broken)
        assert response.status_code == 422, broken
        assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_every_answer_is_documented_with_its_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    redrive = paths["/v1/dead-letters/{topic}/redrive"]["post"]["responses"]
    assert {"200", "401", "403", "404", "422", "503"} <= set(redrive)
    body = paths["/v1/dead-letters/{topic}/redrive"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert body["required"] and "records" in schema["properties"]
    assert "$ref" not in json.dumps(schema), "the body's schema stands alone"
    assert redrive["200"]["content"]["application/json"]["schema"]["$ref"].endswith("RedriveOut")
    listing = paths["/v1/dead-letters/{topic}"]["get"]["responses"]
    assert listing["404"]["content"]["application/json"]["schema"]["$ref"].endswith("Detail")


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_offsets_and_keys() -> None:
    assert parse_offset("2:40") == (2, 40)
    for bad in ("2", "2:x", "-1:2", "٣:1"):
        with pytest.raises(ValueError):
            parse_offset(bad)
    assert admin_key({"TIERLINE_ADMIN_KEY": " first-key , second-key"}) == "first-key"


def test_the_progress_bar_fills_with_the_work_done() -> None:
    assert progress_bar(0, 4, width=4) == "[....] 0/4   0%"
    assert progress_bar(2, 4, width=4) == "[##..] 2/4  50%"
    assert progress_bar(4, 4, width=4) == "[####] 4/4 100%"
    assert progress_bar(0, 0, width=4) == "[####] 0/0 100%"


def test_the_cli_shows_an_origin_as_its_record_or_the_item_of_it() -> None:
    origin = {"topic": ORIGIN, "partition": 2, "offset": 40}
    assert origin_text({**origin, "item": None}) == "2:40"
    assert origin_text({**origin, "item": 3}) == "2:40 item 3"
    assert origin_text(origin) == "2:40"  # a console from before item dead letters
    assert origin_text(None) == ""


def test_tables_line_up() -> None:
    assert table([("0:1", "x")], ("POSITION", "KEY")) == "POSITION  KEY\n0:1       x"


class ChunkedConsole:
    """Answers redrive requests as the console would, recording the chunks."""

    def __init__(self) -> None:
        self.chunks: list[list[tuple[int, int]]] = []

    def redrive(self, topic: str, positions: Sequence[tuple[int, int]], *, dry_run: bool) -> Any:
        self.chunks.append(list(positions))
        return {
            "dlq_topic": DLQ,
            "origin_topic": ORIGIN,
            "redriven": len(positions) - 1,
            "would_redrive": 0,
            "skipped": 1,
            "failed": 0,
            "results": [],
        }


def test_a_redrive_goes_in_chunks_with_a_progress_line_each() -> None:
    console = ChunkedConsole()
    args = argparse.Namespace(
        topic=ORIGIN,
        offset=[f"0:{n}" for n in range(5)] + ["0:0"],
        all=False,
        error_contains=None,
        error_type=None,
        partition=None,
        chunk=2,
        dry_run=False,
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_redrive(console, args, out, err) == 0  # type: ignore[arg-type]
    assert [len(chunk) for chunk in console.chunks] == [2, 2, 1]
    assert err.getvalue().splitlines() == [
        f"redrive {progress_bar(done, 5)}" for done in (0, 2, 4, 5)
    ]
    assert out.getvalue().splitlines()[0] == (
        "redriven 2, skipped 3 (already redriven), failed 0, of 5 from "
        "workitems.completed.dlq to workitems.completed"
    )


def test_the_tierline_command_has_dlq_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        tierline(["dlq", "redrive", ORIGIN])  # neither --all nor --offset
    assert exit_.value.code == 2
    assert "one of the arguments --all --offset is required" in capsys.readouterr().err
