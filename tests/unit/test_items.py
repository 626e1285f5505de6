"""The items API's pure parts (SPEC §10 "Items", §13): the timestamp form, the cursor, the item
document, the weights handed to the SQL export, content negotiation; and its routes' answers to
bad input, decided before any database is asked (so none is needed here)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.metering import items_store
from services.metering.items import (
    ItemSelection,
    ItemWeights,
    Position,
    StoredChange,
    StoredItem,
    class_weights,
    decode_cursor,
    encode_cursor,
    item_document,
    negotiate,
)
from services.metering.items_api import ItemReads, router
from shared.contracts.items import CSV_COLUMNS, TIMESTAMP_PATTERN, ItemDocument
from shared.contracts.wire import utc_instant
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES, ServiceClass
from shared.domain.rating import weighted_units
from shared.infra.auth import KeyRing
from shared.infra.http import add_operational_routes, set_state
from tests.spec_example import spec_body

ADMIN = "admin-key-0123456789abcdef"
ACME_KEY = "client-key-acme-0123456789"
T0 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)


def acme() -> Agreement:
    return parse_agreement(spec_body("acme")).with_version(3)


def stored(**changes: Any) -> StoredItem:
    fields: dict[str, Any] = {
        "client_id": "acme",
        "item_id": "T-1",
        "source": "jira",
        "completed_at": T0,
        "opened_at": None,
        "received_at": T0 + timedelta(seconds=1),
        "late": False,
        "service_line": "accounting",
        "complexity": "complex",
        "rule_id": "ap-invoices-large",
        "agreement_version": 2,
        "units": 25,
        "handling_seconds": None,
    }
    return StoredItem(**{**fields, **changes})


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (T0, "2026-10-05T10:00:00Z"),
        (T0.replace(microsecond=250_000), "2026-10-05T10:00:00.25Z"),
        (T0.replace(microsecond=1), "2026-10-05T10:00:00.000001Z"),
        (T0.replace(microsecond=123_456), "2026-10-05T10:00:00.123456Z"),
        (T0.replace(second=10, microsecond=100_000), "2026-10-05T10:00:10.1Z"),
        (datetime(2026, 10, 5, 6, 0, tzinfo=timezone(timedelta(hours=-4))), "2026-10-05T10:00:00Z"),
    ],
)
def test_an_instant_is_written_in_utc_with_fractional_seconds_only_when_not_zero(
    instant: datetime, text: str
) -> None:
    import re

    assert utc_instant(instant) == text
    assert re.fullmatch(TIMESTAMP_PATTERN, text)


# --- the cursor ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "position",
    [
        Position(T0, "T-1"),
        Position(T0.replace(microsecond=7), 'é/ä, "quoted"\n'),
        Position(datetime(2000, 1, 1, tzinfo=UTC), "x" * 128),
        Position(datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "🙂"),
    ],
)
def test_a_cursor_gives_back_the_position_it_was_made_from(position: Position) -> None:
    text = encode_cursor(position)
    assert text.isascii() and "=" not in text
    assert decode_cursor(text) == position


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!",
        "not-a-cursor",
        _b64(b"[1,2]"),
        _b64(b'["x","y"]'),
        _b64(b"{}"),
        _b64(b'[1759658400000000,""]'),  # an empty id
        _b64(b'[1759658400000000,"a\\u0000"]'),
        _b64(b'[99999999999999999999,"a"]'),
        _b64(b'[-1,"a"]'),  # 1969
        _b64(b'[1759658400000000,"a"]') + "==",  # padded: not as given
        _b64(('[1759658400000000,"' + "x" * 129 + '"]').encode()),
        "é",
        "A" * 2000,
    ],
)
def test_anything_else_is_not_a_cursor(text: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(text)


# --- the document -------------------------------------------------------------------------------


def test_a_classified_item_shows_its_class_rule_and_weighted_units_at_current_weights() -> None:
    document = item_document(stored(), [], period="2026-10", weights=ItemWeights(acme().pricing))
    assert msgspec.to_builtins(document) == {
        "client_id": "acme",
        "id": "T-1",
        "source": "jira",
        "completed_at": "2026-10-05T10:00:00Z",
        "opened_at": None,
        "received_at": "2026-10-05T10:00:01Z",
        "period": "2026-10",
        "late": False,
        "status": "classified",
        "service_line": "accounting",
        "complexity": "complex",
        "rule_id": "ap-invoices-large",
        "agreement_version": 2,
        "units": 25,
        "handling_seconds": None,
        "weighted_units": "5",  # accounting counts items: 5 × 1
        "history": [],
    }


def test_a_units_basis_line_weighs_the_items_units() -> None:
    item = stored(service_line="data_entry", complexity="standard", units=250)
    document = item_document(item, [], period="2026-10", weights=ItemWeights(acme().pricing))
    assert document.weighted_units == "500"  # SPEC §6 worked example 5


def test_decimal_weights_are_written_plainly() -> None:
    body = spec_body("acme")
    body["pricing"]["weights"] = {"basic": "0.25", "standard": "1.50", "complex": "2.125"}
    pricing = parse_agreement(body).pricing
    item = stored(service_line="data_entry", complexity="standard", units=3)
    assert (
        item_document(item, [], period="2026-10", weights=ItemWeights(pricing)).weighted_units
        == "4.5"
    )


def test_an_unclassified_item_has_no_class_rule_or_weight() -> None:
    item = stored(service_line="unclassified", complexity="none", rule_id=None)
    document = item_document(item, [], period="2026-10", weights=ItemWeights(acme().pricing))
    assert (document.status, document.service_line, document.complexity) == (
        "unclassified",
        None,
        None,
    )
    assert (document.rule_id, document.weighted_units) == (None, "0")


def test_without_an_agreement_nothing_weighs_anything() -> None:
    item = stored(agreement_version=None)
    document = item_document(item, [], period="2026-10", weights=ItemWeights(None))
    assert (document.status, document.weighted_units, document.agreement_version) == (
        "classified",
        "0",
        None,
    )


def test_history_is_written_in_the_order_given_with_null_for_unclassified() -> None:
    changes = [
        StoredChange("T-1", T0, "unclassified", "none", "hr", "basic", "rc-1", "queue fixed"),
        StoredChange(
            "T-1", T0 + timedelta(microseconds=500), "hr", "basic", "hr", "standard", "rc-2", "x"
        ),
    ]
    document = item_document(stored(), changes, period="2026-10", weights=ItemWeights(None))
    assert msgspec.to_builtins(document.history) == [
        {
            "at": "2026-10-05T10:00:00Z",
            "from": None,
            "to": {"service_line": "hr", "complexity": "basic"},
            "reclassification": "rc-1",
            "reason": "queue fixed",
        },
        {
            "at": "2026-10-05T10:00:00.0005Z",
            "from": {"service_line": "hr", "complexity": "basic"},
            "to": {"service_line": "hr", "complexity": "standard"},
            "reclassification": "rc-2",
            "reason": "x",
        },
    ]


def test_the_document_decodes_as_its_own_contract() -> None:
    document = item_document(stored(), [], period="2026-10", weights=ItemWeights(acme().pricing))
    raw = msgspec.json.encode(document)
    assert msgspec.json.decode(raw, type=ItemDocument) == document


def test_the_csv_columns_are_the_documents_fields_in_spec_order_without_history() -> None:
    assert CSV_COLUMNS == (
        "client_id",
        "id",
        "source",
        "completed_at",
        "opened_at",
        "received_at",
        "period",
        "late",
        "status",
        "service_line",
        "complexity",
        "rule_id",
        "agreement_version",
        "units",
        "handling_seconds",
        "weighted_units",
    )
    # The SQL export writes exactly these columns, each from its own expression.
    assert tuple(items_store._CSV_EXPRESSIONS) == CSV_COLUMNS


# --- what the SQL export is given ---------------------------------------------------------------


@pytest.mark.parametrize("units", [1, 7, 250])
def test_the_weights_given_to_sql_are_the_one_rules_for_every_class(units: int) -> None:
    body = spec_body("acme")
    body["pricing"]["weights"] = {"basic": "0.25", "standard": "1.5", "complex": "5"}
    pricing = parse_agreement(body).pricing
    weights = class_weights(pricing)
    assert weights.lines == SERVICE_LINES and weights.complexities == COMPLEXITIES
    index = 0
    for line in SERVICE_LINES:
        for complexity in COMPLEXITIES:
            linear = weights.per_item[index] + weights.per_unit[index] * units
            expected = weighted_units(pricing, ServiceClass(line, complexity), 1, units)
            assert linear == expected, (line, complexity)
            index += 1


def test_without_an_agreement_the_sql_weights_are_zero() -> None:
    weights = class_weights(None)
    assert set(weights.per_item) == set(weights.per_unit) == {Decimal(0)}
    assert len(weights.per_item) == len(SERVICE_LINES) * len(COMPLEXITIES)


# --- content negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        (None, "json"),
        ("", "json"),
        ("application/json", "json"),
        ("*/*", "json"),
        ("text/csv", "csv"),
        ("TEXT/CSV; charset=utf-8", "csv"),
        ("application/x-ndjson", "ndjson"),
        ("text/html", "json"),
        ("application/json;q=0.5, text/csv", "csv"),
        ("text/csv;q=0.2, application/x-ndjson;q=0.9", "ndjson"),
        ("text/csv, application/x-ndjson", "csv"),
        ("text/csv;q=0, application/json", "json"),
        ("text/csv;q=abc", "json"),
    ],
)
def test_accept_chooses_the_answer(accept: str | None, answer: str) -> None:
    assert negotiate(accept) == answer


# --- the routes' answers to bad input -----------------------------------------------------------


class NoDatabase:
    """Any query fails the test: bad input must be answered before the database is asked."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name}) for a bad request")


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    app.state.keys = KeyRing(
        admin_keys=[ADMIN],
        intake_keys={"intake-key-0123456789": "jira"},
        client_keys={ACME_KEY: "acme"},
    )
    app.include_router(router)
    set_state(app, ItemReads(cast(Any, NoDatabase()), cast(Any, NoDatabase()), {}))
    add_operational_routes(app, registry=CollectorRegistry(), health=healthy)
    return app


async def healthy() -> dict[str, Any]:
    return {}


def client_of(app: FastAPI, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"period": "2026-10"}, "client_id"),  # required with an admin key
        ({"client_id": "acme"}, "period"),
        ({"client_id": "Acme", "period": "2026-10"}, "client_id"),
        ({"client_id": "acme", "period": "2026-13"}, "period"),
        ({"client_id": "acme", "period": "1999-12"}, "period"),
        ({"client_id": "acme", "period": "2100-01"}, "period"),
        ({"client_id": "acme", "period": "2026-1"}, "period"),
        ({"client_id": "acme", "period": "2026-10", "limit": "0"}, "limit"),
        ({"client_id": "acme", "period": "2026-10", "limit": "1001"}, "limit"),
        ({"client_id": "acme", "period": "2026-10", "limit": "ten"}, "limit"),
        ({"client_id": "acme", "period": "2026-10", "cursor": "!!!"}, "cursor"),
        ({"client_id": "acme", "period": "2026-10", "cursor": "x" * 1025}, "cursor"),
        ({"client_id": "acme", "period": "2026-10", "service_line": "legal"}, "service_line"),
        ({"client_id": "acme", "period": "2026-10", "complexity": "hard"}, "complexity"),
        ({"client_id": "acme", "period": "2026-10", "status": "billed"}, "status"),
        ({"client_id": "acme", "period": "2026-10", "rule_id": "a\x00b"}, "rule_id"),
        ({"client_id": "acme", "period": "2026-10", "rule_id": ""}, "rule_id"),
    ],
)
async def test_a_bad_list_request_is_422_naming_the_parameter(
    app: FastAPI, params: dict[str, str], parameter: str
) -> None:
    async with client_of(app, ADMIN) as http:
        for accept in ("application/json", "text/csv", "application/x-ndjson"):
            response = await http.get("/v1/items", params=params, headers={"Accept": accept})
            assert response.status_code == 422, response.text
            assert [p["loc"] for p in response.json()["detail"]] == [["query", parameter]]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/items/Acme/T-1", "client_id"),
        ("/v1/items/acme/" + "x" * 129, "item_id"),
        ("/v1/items/acme/T%001", "item_id"),
        ("/v1/items/acme/", "item_id"),
    ],
)
async def test_a_malformed_item_path_is_422_naming_it(
    app: FastAPI, path: str, parameter: str
) -> None:
    async with client_of(app, ADMIN) as http:
        response = await http.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", parameter]


async def test_a_client_key_naming_another_client_is_403_before_anything_is_read(
    app: FastAPI,
) -> None:
    async with client_of(app, ACME_KEY) as http:
        listed = await http.get("/v1/items", params={"client_id": "globex", "period": "2026-10"})
        exported = await http.get(
            "/v1/items",
            params={"client_id": "nobody", "period": "2026-10"},
            headers={"Accept": "text/csv"},
        )
        one = await http.get("/v1/items/globex/T-1")
    assert (listed.status_code, exported.status_code, one.status_code) == (403, 403, 403)


async def test_no_key_is_401_and_an_intake_key_403(app: FastAPI) -> None:
    async with client_of(app, "unknown-key-0123456789") as http:
        assert (await http.get("/v1/items/acme/T-1")).status_code == 401
    async with client_of(app, "intake-key-0123456789") as http:
        response = await http.get("/v1/items", params={"client_id": "acme", "period": "2026-10"})
        assert response.status_code == 403


async def test_the_items_routes_document_every_answer(app: FastAPI) -> None:
    async with client_of(app, ADMIN) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    listing = paths["/v1/items"]["get"]
    assert {"200", "401", "403", "408", "413", "422"} <= set(listing["responses"])
    assert set(listing["responses"]["200"]["content"]) == {
        "application/json",
        "text/csv",
        "application/x-ndjson",
    }
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert page["required"] == ["items", "next_cursor"]
    document = page["properties"]["items"]["items"]
    assert document["required"] == [*CSV_COLUMNS, "history"]
    one = paths["/v1/items/{client_id}/{item_id}"]["get"]
    assert {"200", "401", "403", "404", "422"} <= set(one["responses"])
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == document
    selection = ItemSelection("acme", "2026-10", T0, T0)
    assert selection.first() == Position(T0, "")
