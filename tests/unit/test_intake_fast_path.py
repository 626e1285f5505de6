"""Intake's fast path (msgspec) against the contract of record (pydantic `WorkItem`): the fast
path may refuse a body `WorkItem` would take (it then goes the checked way), but never accepts a
body `WorkItem` refuses, and when both accept they make the same records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.parsing import (
    JSON,
    NDJSON,
    InvalidItems,
    TooManyItems,
    _checked_items,
    _fast_records,
    parse_work_items,
)
from shared.contracts.workitems import CompletedWorkItem
from tests.unit.test_events import EDGES, ITEM

RECEIVED = datetime(2026, 10, 2, 8, 0, tzinfo=UTC)


def checked(body: bytes, kind: str) -> list[CompletedWorkItem] | None:
    try:
        items = _checked_items(body, kind, received_at=RECEIVED)
    except InvalidItems:
        return None
    return [
        CompletedWorkItem(**item.__dict__, received_at=RECEIVED, key_source="k") for item in items
    ]


def fast(body: bytes, kind: str) -> list[CompletedWorkItem] | None:
    return _fast_records(body, kind, received_at=RECEIVED, key_source="k")


def assert_agree(body: bytes, kind: str = JSON) -> tuple[Any, Any]:
    quick, sure = fast(body, kind), checked(body, kind)
    assert quick is None or quick == sure, (body, quick, sure)
    return quick, sure


@pytest.mark.parametrize(("field", "value", "valid"), EDGES)
def test_the_edges_of_every_field(field: str, value: Any, valid: bool) -> None:
    quick, sure = assert_agree(orjson.dumps({**ITEM, field: value}))
    assert (sure is not None) == valid
    if valid:
        assert quick is not None  # ordinary valid input takes the fast path


RAW_BODIES = [
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"queue": null}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"id": "b"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"n": 123456789012345678901234567890}}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"n": 1e999}}',
    b'{"id": "\\ud800", "client_id": "acme", "source": "s", "completed_at": '
    b'"2026-10-01T00:00:00Z"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z",}',
    b'{"id": "a", "client_id": "acme\\n", "source": "s", "completed_at": "2026-10-01T00:00:00Z"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z\\n"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01t00:00:00z"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01 00:00:00+02:00"}',
    b'{"id": "a", "client_id": "acme", "source": "s", '
    b'"completed_at": "2026-10-01T00:00:00.123456789Z"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-02-30T00:00:00Z"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": 1790000000}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-02T08:05:00Z"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-02T08:05:01Z"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"title": "' + "\N{GRINNING FACE}".encode() * 500 + b'"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"title": "' + "\N{GRINNING FACE}".encode() * 501 + b'"}',
    b"[]",
    b"{}",
    b"5",
    b"[[]]",
    b'"text"',
    b"",
    b"[" + b",".join([orjson.dumps(ITEM)] * 3) + b"]",
    b"[" + orjson.dumps(ITEM) + b", 7]",
    # hostile input (issue 10): escapes, bytes and numbers a JSON reader may let through
    b'{"id": "a\\u0000", "client_id": "acme", "source": "s", "completed_at": '
    b'"2026-10-01T00:00:00Z"}',
    b'{"id": "a\\\\u0000", "client_id": "acme", "source": "s", "completed_at": '
    b'"2026-10-01T00:00:00Z"}',  # a backslash, then the text u0000: no U+0000 at all
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"k\\u0000": 1}}',
    b'{"id": "a\x00", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z"}',
    b'{"id": "\\udc00", "client_id": "acme", "source": "s", "completed_at": '
    b'"2026-10-01T00:00:00Z"}',
    b'{"id": "\\ud800\\u0041", "client_id": "acme", "source": "s", "completed_at": '
    b'"2026-10-01T00:00:00Z"}',
    b'{"id": "\\ud83d\\ude00", "client_id": "acme", "source": "s", "completed_at": '
    b'"2026-10-01T00:00:00Z"}',  # a surrogate pair: one real character
    b'{"id": "a\xff", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z"}',
    b'{"id": "a\xed\xa0\x80", "client_id": "acme", "source": "s", "completed_at": '
    b'"2026-10-01T00:00:00Z"}',  # a surrogate encoded as UTF-8
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"\xc3": 1}}',
    b"\xef\xbb\xbf" + orjson.dumps(ITEM),
    b"[" * 10_000,
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"a": ' + b"[" * 10_000 + b"}}",
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"n": 9007199254740993}}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"n": -9007199254740992}}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"n": 18446744073709551616}}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"n": 1e400}}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00Z", '
    b'"attributes": {"n": NaN}}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "0001-01-01T00:00:00+14:00"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2099-12-31T23:00:00-05:00"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2000-01-01T00:00:00+00:01"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2000-01-01T00:00:00-00:01"}',
    b'{"id": "a", "client_id": "acme", "source": "s", "completed_at": "2026-10-01T00:00:00+24:00"}',
]


@pytest.mark.parametrize("body", RAW_BODIES)
def test_json_the_checked_path_reads_otherwise(body: bytes) -> None:
    assert_agree(body)


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(ITEM) + b"\n\n" + orjson.dumps({**ITEM, "id": "t-2"}) + b"\n",
        orjson.dumps(ITEM) + b"\nnot json\n",
        orjson.dumps(ITEM) + b"\n" + orjson.dumps({**ITEM, "units": "5"}),
        b"\n \n",
        orjson.dumps(ITEM) + b"\n" + b'{"id": "\xff"}',
        orjson.dumps(ITEM) + b"\n" + b"[" * 10_000,
        orjson.dumps(ITEM) + b"\n" + orjson.dumps({**ITEM, "title": "a\x00"}),
    ],
)
def test_ndjson(body: bytes) -> None:
    assert_agree(body, NDJSON)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"id": "a\xff"}', "invalid UTF-8 at line 1, column 10 (byte offset 9)"),
        (b'[\n{"id":\n "\xc3("}]', "invalid UTF-8 at line 3, column 3 (byte offset 11)"),
        (b'{"id": "\\ud800"}', "invalid JSON at line 1, column 9"),
        (b'{"id": 1,}', "invalid JSON at line 1, column 9"),
        (b"[" * 10_000, "invalid JSON at line 1, column 1026"),
        (b"", "invalid JSON at line 1, column 1"),
    ],
)
def test_a_broken_body_says_where(body: bytes, where: str) -> None:
    with pytest.raises(InvalidItems) as raised:
        parse_work_items(body, JSON, received_at=RECEIVED, key_source="k")
    [error] = raised.value.errors
    assert (error.index, error.loc) == (0, ())
    assert error.msg.startswith(where), error.msg


def test_a_broken_ndjson_line_says_which_line_of_the_body() -> None:
    body = orjson.dumps(ITEM) + b"\n\n" + b'{"id": "\xff"}\n' + b"{nope\n"
    with pytest.raises(InvalidItems) as raised:
        parse_work_items(body, NDJSON, received_at=RECEIVED, key_source="k")
    assert [(e.index, e.msg.split(":")[0]) for e in raised.value.errors] == [
        (1, f"invalid UTF-8 at line 3, column 9 (byte offset {len(orjson.dumps(ITEM)) + 10})"),
        (2, "invalid JSON at line 4, column 2"),
    ]


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"id": "a\x00"}, ("id",)),
        ({"tags": ["x", "\x00"]}, ("tags", 1)),
        ({"attributes": {"n": 2**53 + 1}}, ("attributes", "n")),
        ({"attributes": {"s": "v" * 1001}}, ("attributes", "s")),
        ({"completed_at": "0001-01-01T00:00:00+14:00"}, ("completed_at",)),
        ({"completed_at": "2099-12-31T23:00:00-05:00"}, ("completed_at",)),
    ],
)
def test_a_hostile_item_is_refused_naming_its_field(
    changes: dict[str, Any], loc: tuple[Any]
) -> None:
    body = orjson.dumps([ITEM, {**ITEM, **changes}])
    with pytest.raises(InvalidItems) as raised:
        parse_work_items(body, JSON, received_at=RECEIVED, key_source="k")
    assert [(e.index, e.loc[: len(loc)]) for e in raised.value.errors] == [(1, loc)]


def test_the_item_limit_holds_on_both_paths() -> None:
    items = [{**ITEM, "id": f"t-{n}"} for n in range(5001)]
    with pytest.raises(TooManyItems):
        parse_work_items(orjson.dumps(items), JSON, received_at=RECEIVED, key_source="k")
    items[7]["units"] = "5"  # now the fast path refuses it: the checked one still says 413
    with pytest.raises(TooManyItems):
        parse_work_items(orjson.dumps(items), JSON, received_at=RECEIVED, key_source="k")


def test_a_refused_body_still_lists_every_error() -> None:
    body = orjson.dumps([{**ITEM, "units": 0}, ITEM, {**ITEM, "queue": None}])
    with pytest.raises(InvalidItems) as raised:
        parse_work_items(body, JSON, received_at=RECEIVED, key_source="k")
    assert [(e.index, e.loc) for e in raised.value.errors] == [(0, ("units",)), (2, ("queue",))]


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 600, 604_800, 604_801, 1_000_000, 1_000_001, 1.0, 2.5]),
    st.text(max_size=70),
    st.sampled_from(["acme", "Acme", "a" * 64, "a" * 65, "2026-10-01T00:00:00Z", "2026-10-01"]),
    st.lists(st.one_of(st.text(max_size=66), st.integers()), max_size=52),
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(), st.none()),
        max_size=52,
    ),
)
FIELDS = [*ITEM, "extra"]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4), st.sets(st.sampled_from(FIELDS))
)
def test_random_items_never_pass_only_the_fast_way(
    changes: dict[str, Any], dropped: set[str]
) -> None:
    item = {k: v for k, v in {**ITEM, **changes}.items() if k not in dropped}
    try:
        body = orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError):
        return  # not JSON (an int beyond 64 bits): nothing a caller could send this way
    assert_agree(body)


def test_now_and_a_little_ahead_take_the_fast_path() -> None:
    now = RECEIVED + timedelta(minutes=4, seconds=59)
    quick, sure = assert_agree(orjson.dumps({**ITEM, "completed_at": now.isoformat()}))
    assert quick is not None and quick == sure
