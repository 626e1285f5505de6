"""The records that travel between the services: what intake writes decodes downstream, a
record that breaks the contract is a ContractError naming the field, and the downstream record
holds the same bounds as the intake contract (`WorkItem`) it is written from."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from services.intake.parsing import JSON, parse_work_items
from shared.contracts.workitems import (
    CLASSIFIED_RECORDS,
    COMPLETED_RECORDS,
    MAX_RECORD_BYTES,
    MAX_RULE_ID,
    CompletedWorkItem,
    ContractError,
    WorkItem,
    batch_element,
    decode_classified,
    decode_completed,
    encode_record,
    is_batch,
    pack_records,
    with_outcome,
)

RECEIVED = datetime(2026, 10, 2, 8, 0, tzinfo=UTC)
KAFKA_DEFAULT_MESSAGE_MAX_BYTES = 1_048_588  # what the local broker takes
ITEM: dict[str, Any] = {
    "id": "t-1",
    "client_id": "acme",
    "source": "zendesk",
    "completed_at": "2026-10-01T09:30:00+02:00",
    "queue": "Customer Care",
    "title": "Refund request",
    "tags": ["vip", "refund"],
    "units": 3,
    "handling_seconds": 420,
    "attributes": {"priority": "high", "pages": 12, "urgent": True, "ratio": 0.5},
}


def completed(**changes: Any) -> dict[str, Any]:
    record = {**ITEM, "received_at": RECEIVED.isoformat(), "key_source": "zendesk", **changes}
    return {name: value for name, value in record.items() if value is not ...}


def test_what_intake_writes_decodes_with_every_field() -> None:
    (accepted,) = parse_work_items(orjson.dumps(ITEM), JSON, received_at=RECEIVED, key_source="zd")
    record = decode_completed(encode_record(accepted))
    assert record.client_id == "acme" and record.id == "t-1"
    assert record.completed_at == datetime(2026, 10, 1, 7, 30, tzinfo=UTC)
    assert record.received_at == RECEIVED and record.key_source == "zd"
    assert (record.queue, record.title, record.tags) == (
        ITEM["queue"],
        ITEM["title"],
        ["vip", "refund"],
    )
    assert (record.units, record.handling_seconds) == (3, 420)
    assert record.attributes == ITEM["attributes"]


def test_absent_optionals_stay_absent_on_the_wire() -> None:
    minimal = {k: ITEM[k] for k in ("id", "client_id", "source", "completed_at")}
    (accepted,) = parse_work_items(
        orjson.dumps(minimal), JSON, received_at=RECEIVED, key_source="zd"
    )
    wire = orjson.loads(encode_record(accepted))
    assert set(wire) == {"id", "client_id", "source", "completed_at", "received_at", "key_source"}
    assert decode_completed(orjson.dumps(wire)).units == 1  # SPEC §2's default


def test_the_classified_record_carries_the_outcome() -> None:
    item = decode_completed(orjson.dumps(completed()))
    placed = decode_classified(
        encode_record(
            with_outcome(
                item,
                service_line="customer_support",
                complexity="basic",
                rule_id="customer-care",
                agreement_version=4,
            )
        )
    )
    assert (placed.service_line, placed.complexity, placed.rule_id) == (
        "customer_support",
        "basic",
        "customer-care",
    )
    assert placed.agreement_version == 4 and placed.classified
    assert placed.units == 3 and placed.attributes == ITEM["attributes"]
    unplaced = decode_classified(
        encode_record(
            with_outcome(
                item, service_line=None, complexity=None, rule_id=None, agreement_version=None
            )
        )
    )
    assert not unplaced.classified and unplaced.rule_id is None


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (completed(source=...), "source"),
        (completed(units="5"), "units"),
        (completed(units=True), "units"),
        (completed(completed_at="2026-10-01T09:30:00"), "completed_at"),
        (completed(client_id="Acme"), "client_id"),
        (completed(tags=["x" * 65]), "tags"),
        (completed(colour="blue"), "colour"),
    ],
)
def test_a_broken_record_names_its_field(record: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError, match=f"not a valid CompletedWorkItem: .*{field}"):
        decode_completed(orjson.dumps(record))


def test_undecodable_bytes_and_half_a_class_are_contract_errors() -> None:
    with pytest.raises(ContractError, match="malformed"):
        decode_completed(b'{"id": }')
    with pytest.raises(ContractError, match="not a valid CompletedWorkItem"):
        decode_completed(None)
    with pytest.raises(ContractError, match="set together"):
        decode_classified(orjson.dumps(completed(service_line="hr")))


# The same bounds as SPEC §2 (WorkItem): a value on either side of each edge is accepted or
# refused by both, so the two definitions cannot drift apart unnoticed.
EDGES: list[tuple[str, Any, bool]] = [
    ("id", "x" * 128, True),
    ("id", "x" * 129, False),
    ("id", "", False),
    ("client_id", "a" * 64, True),
    ("client_id", "a" * 65, False),
    ("client_id", "-acme", False),
    ("source", "s" * 64, True),
    ("source", "s" * 65, False),
    ("queue", "q" * 200, True),
    ("queue", "q" * 201, False),
    ("title", "t" * 500, True),
    ("title", "t" * 501, False),
    ("tags", ["t"] * 50, True),
    ("tags", ["t"] * 51, False),
    ("tags", ["t" * 64], True),
    ("tags", [1], False),
    ("units", 1, True),
    ("units", 0, False),
    ("units", 1_000_000, True),
    ("units", 1_000_001, False),
    ("units", 2.0, False),
    ("handling_seconds", 0, True),
    ("handling_seconds", -1, False),
    ("handling_seconds", 604_800, True),
    ("handling_seconds", 604_801, False),
    ("attributes", {f"k{n}": n for n in range(50)}, True),
    ("attributes", {f"k{n}": n for n in range(51)}, False),
    ("attributes", {"nested": {"a": 1}}, False),
    ("completed_at", "2026-10-01T09:30:00Z", True),
    ("completed_at", "2026-10-01", False),
    # SPEC §13: text without U+0000, in every string, attribute keys included
    ("id", "t\x00", False),
    ("source", "\x00", False),
    ("queue", "AP\x00", False),
    ("title", "x" * 100 + "\x00", False),
    ("tags", ["ok", "b\x00d"], False),
    ("attributes", {"k\x00": 1}, False),
    ("attributes", {"k": "v\x00"}, False),
    ("title", "\x01\x1f\u2028 \N{GRINNING FACE}", True),  # other control characters are text
    # attributes: integers within ±2^53 inclusive, strings (and keys) at most 1,000 characters
    ("attributes", {"n": 2**53, "m": -(2**53)}, True),
    ("attributes", {"n": 2**53 + 1}, False),
    ("attributes", {"n": -(2**53) - 1}, False),
    ("attributes", {"n": 2**63 - 1}, False),
    ("attributes", {"s": "x" * 1000, "k" * 1000: True}, True),
    ("attributes", {"s": "x" * 1001}, False),
    ("attributes", {"k" * 1001: True}, False),
    ("attributes", {"f": 9007199254740992.0, "g": -2.5, "h": 1e-300}, True),
    ("attributes", {"f": 1e300}, False),  # an integer beyond 2^53, written as a float
    ("attributes", {"f": -9007199254740994.0}, False),
    # completed_at in 2000..2099, as written and in UTC
    ("completed_at", "2000-01-01T00:00:00Z", True),
    ("completed_at", "1999-12-31T23:59:59Z", False),
    ("completed_at", "0001-01-01T00:00:00+14:00", False),
    ("completed_at", "2000-01-01T00:30:00+01:00", False),  # 1999 in UTC
    ("completed_at", "1999-12-31T23:30:00-01:00", False),  # 2000 in UTC, 1999 as written
    ("completed_at", "2099-12-31T23:00:00-05:00", False),  # 2100 in UTC
    ("completed_at", "9999-12-31T23:59:59Z", False),
    # opened_at (SPEC §2): RFC 3339 with an offset, in 2000..2099, not after completed_at
    ("opened_at", "2026-10-01T07:30:00Z", True),  # the same instant as completed_at
    ("opened_at", "2026-09-28T17:00:00-04:00", True),
    ("opened_at", "2026-10-01T07:30:01Z", False),  # after completed_at
    ("opened_at", "2026-10-01T09:30:00", False),  # no offset
    ("opened_at", "2026-10-01", False),
    ("opened_at", 1759300000, False),
    ("opened_at", "1999-12-31T23:59:59Z", False),
]


@pytest.mark.parametrize(("field", "value", "valid"), EDGES)
def test_the_record_holds_the_intake_contract_bounds(field: str, value: Any, valid: bool) -> None:
    try:
        WorkItem.model_validate({**ITEM, field: value})
        intake_accepts = True
    except ValidationError:
        intake_accepts = False
    try:
        decode_completed(orjson.dumps(completed(**{field: value})))
        record_accepts = True
    except ContractError:
        record_accepts = False
    assert (intake_accepts, record_accepts) == (valid, valid)


def test_the_record_has_the_intake_fields_and_two_more() -> None:
    assert set(CompletedWorkItem.__struct_fields__) == set(WorkItem.model_fields) | {
        "received_at",
        "key_source",
    }


# --- poison written straight to Kafka: a ContractError (dead letter), never a database error ---


def classified(**changes: Any) -> dict[str, Any]:
    outcome = {
        "service_line": "accounting",
        "complexity": "complex",
        "rule_id": "ap-invoices-large",
        "agreement_version": 4,
    }
    return completed(**{**outcome, **changes})


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (classified(service_line="astrology"), "service_line"),
        (classified(service_line="Accounting"), "service_line"),
        (classified(complexity="extreme"), "complexity"),
        (classified(agreement_version=3_000_000_000), "agreement_version"),
        (classified(agreement_version=2**31), "agreement_version"),
        (classified(agreement_version=0), "agreement_version"),
        (classified(agreement_version=2.0), "agreement_version"),
        (classified(rule_id="r" * 201), "rule_id"),
        (classified(rule_id=""), "rule_id"),
        (classified(key_source="k" * 201), "key_source"),
        (classified(completed_at="0001-01-01T00:00:00+14:00"), "completed_at"),
        (classified(completed_at="2099-12-31T23:00:00-05:00"), "completed_at"),
        (classified(received_at="1970-01-01T00:00:00Z"), "received_at"),
        (classified(attributes={"n": 2**53 + 1}), "attributes"),
        (classified(attributes={"s": "x" * 1001}), "attributes"),
        (classified(id="t\x00"), "id"),
        (classified(title="a\x00b"), "title"),
        (classified(tags=["x", "\x00"]), "tags"),
        (classified(attributes={"k\x00": 1}), "attributes"),
        (classified(attributes={"k": "\x00"}), "attributes"),
        (classified(key_source="\x00"), "key_source"),
        (classified(rule_id="rule\x00"), "rule_id"),
    ],
)
def test_a_value_metering_could_not_store_is_a_contract_error(
    record: dict[str, Any], field: str
) -> None:
    with pytest.raises(ContractError, match=f"not a valid ClassifiedWorkItem: .*{field}"):
        decode_classified(orjson.dumps(record))
    # in a batch, the same checks hold for every item, and only that item is refused
    good, bad = orjson.dumps(classified()), orjson.dumps(record)
    with pytest.raises(ContractError, match=field):
        CLASSIFIED_RECORDS.decode(b"[" + good + b"," + bad + b"]")
    first, second = CLASSIFIED_RECORDS.decode_each(b"[" + good + b"," + bad + b"]")
    assert first == decode_classified(good)
    assert isinstance(second, ContractError) and field in str(second)


def test_a_record_is_one_item_or_a_batch_of_them_in_order() -> None:
    one, two = orjson.dumps(completed()), orjson.dumps(completed(id="t-2"))
    assert COMPLETED_RECORDS.decode(one) == [decode_completed(one)]
    assert [i.id for i in COMPLETED_RECORDS.decode(b"[" + one + b"," + two + b"]")] == [
        "t-1",
        "t-2",
    ]
    assert [i.id for i in COMPLETED_RECORDS.decode(b" \n[" + two + b"]")] == ["t-2"]
    assert COMPLETED_RECORDS.decode(b"[]") == []
    assert is_batch(b"\t[") and not is_batch(one) and not is_batch(b"")
    assert batch_element(b"[" + one + b", " + two + b"]", 1) == two
    with pytest.raises(ContractError, match="not a JSON array"):
        COMPLETED_RECORDS.decode_each(b"[" + one)


def test_records_are_packed_in_order_and_never_over_the_limit() -> None:
    values = [orjson.dumps(completed(id=f"t-{n}", title="x" * (n * 7 % 50))) for n in range(40)]
    for limit in (max(map(len, values)), 500, 2_000, 10_000, MAX_RECORD_BYTES):
        records = pack_records(values, limit=limit)
        assert all(len(record) <= limit for record in records), limit
        unpacked = [item for record in records for item in COMPLETED_RECORDS.decode(record)]
        assert unpacked == [decode_completed(value) for value in values], limit
        # as few as fit: no two neighbours would have fit in one
        for left, right in itertools.pairwise(records):
            assert len(left) + len(right) + 1 > limit
    assert pack_records(values[:1]) == values[:1]  # a lone item stays a plain object
    assert pack_records([]) == []


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps(classified())[:-1] + b', "queue": "\xff"}',  # invalid UTF-8 in a string
        orjson.dumps(classified())[:-1] + b', "queue": "\xed\xa0\x80"}',  # an encoded surrogate
        orjson.dumps(classified())[:-1] + b', "queue": "\\ud800"}',  # a lone surrogate escape
        orjson.dumps(classified())[:-1] + b', "queue": "\\udc00x"}',
        orjson.dumps(classified())[:-1] + b', "queue": "a\x00"}',  # a raw control byte
        b"[" * 10_000,
        b'{"attributes": {"a": ' + b"[" * 10_000,
    ],
)
def test_bytes_no_decoder_should_read_are_contract_errors(value: bytes) -> None:
    with pytest.raises(ContractError):
        decode_classified(value)
    with pytest.raises(ContractError):
        decode_completed(value)
    with pytest.raises(ContractError):
        CLASSIFIED_RECORDS.decode(value)
    with pytest.raises(ContractError):
        CLASSIFIED_RECORDS.decode(b"[" + value + b"]")


def test_the_outcome_may_be_null_when_unclassified_and_the_edges_hold() -> None:
    unplaced = decode_classified(
        orjson.dumps(
            classified(service_line=None, complexity=None, rule_id=None, agreement_version=None)
        )
    )
    assert not unplaced.classified
    edge = decode_classified(
        orjson.dumps(
            classified(
                rule_id="builtin:" + "r" * 192,
                agreement_version=2**31 - 1,
                completed_at="2099-12-31T18:59:59-05:00",
                received_at="2000-01-01T00:00:00Z",
                title="a\\u0000b",  # a backslash and the text u0000: no U+0000 in it
            )
        )
    )
    assert edge.agreement_version == 2**31 - 1 and edge.title == "a\\u0000b"


def largest_item() -> CompletedWorkItem:
    """The largest record SPEC §2 allows, in the characters that encode longest (a control
    character is written as a 6-byte escape)."""
    wide = "\x01"
    return CompletedWorkItem(
        id=wide * 128,
        client_id="c" * 64,
        source=wide * 64,
        completed_at=datetime(2026, 10, 1, 9, 30, 0, 123456, tzinfo=UTC),
        received_at=datetime(2026, 10, 1, 9, 30, 0, 123456, tzinfo=UTC),
        key_source=wide * 200,
        queue=wide * 200,
        title=wide * 500,
        tags=[wide * 64] * 50,
        units=1_000_000,
        handling_seconds=604_800,
        attributes={f"{n:02d}" + wide * 998: wide * 1000 for n in range(50)},
    )


def test_the_largest_item_classified_fits_the_record_limit_and_the_broker() -> None:
    record = largest_item()
    assert decode_completed(encode_record(record)) == record  # within every bound
    placed = with_outcome(
        record,
        service_line="procurement",
        complexity="standard",
        rule_id="reclassification:" + wide_rule(),
        agreement_version=2**31 - 1,
    )
    size = len(encode_record(placed))
    assert size <= MAX_RECORD_BYTES
    # Kafka's default message.max.bytes counts the batch: key, headers and ~100 bytes of framing
    assert MAX_RECORD_BYTES + 64 + 1024 < KAFKA_DEFAULT_MESSAGE_MAX_BYTES


def wide_rule() -> str:
    return "r" * (MAX_RULE_ID - len("reclassification:"))
