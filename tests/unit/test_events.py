"""The records that travel between the services: what intake writes decodes downstream, a
record that breaks the contract is a ContractError naming the field, and the downstream record
holds the same bounds as the intake contract (`WorkItem`) it is written from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from services.intake.parsing import JSON, parse_work_items
from shared.events import (
    ContractError,
    WorkItem,
    decode_classified,
    decode_completed,
    encode_record,
    with_outcome,
)

RECEIVED = datetime(2026, 10, 2, 8, 0, tzinfo=UTC)
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
    from shared.events import CompletedWorkItem

    assert set(CompletedWorkItem.__struct_fields__) == set(WorkItem.model_fields) | {
        "received_at",
        "key_source",
    }
