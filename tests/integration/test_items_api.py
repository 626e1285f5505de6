"""The items API (SPEC §10 "Items", §13) on a real PostgreSQL: items written into metering's ledger
as metering keeps them, read back through metering's routes (an in-process app with the
items router, as metering's composition root builds it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.metering import items_store
from services.metering.items import ItemSelection, class_weights
from services.metering.items_api import ItemReads, router
from shared.contracts.items import CSV_COLUMNS, ItemDocument, ItemPage
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES
from shared.domain.periods import parse_period, period_bounds
from shared.infra.auth import KeyRing
from shared.infra.db import create_pool
from shared.infra.http import add_operational_routes, set_state
from tests.asgi import asgi_client
from tests.items_ledger import LedgerChange, LedgerItem, seed_changes, seed_items
from tests.spec_example import spec_body
from tools.items_cli import add_items_commands
from tools.items_cli import run as run_cli
from tools.localinfra import free_port

ADMIN = "admin-key-0123456789abcdef"
#: New York's October 2026 runs from 04:00Z on the 1st to 04:00Z on November 1st.
OCTOBER = datetime(2026, 10, 1, 4, 0, tzinfo=UTC)
_PAGE = msgspec.json.Decoder(ItemPage)
_DOCUMENT = msgspec.json.Decoder(ItemDocument)


class Agreements(dict[str, Agreement]):
    """The agreement view as the routes read it (`get`)."""


def client_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def agreement_for(client: str, *, weights: dict[str, str] | None = None) -> Agreement:
    body = spec_body(client)  # America/New_York; data_entry on a units basis
    if weights is not None:
        body["pricing"]["weights"] = weights
    return parse_agreement(body).with_version(3)


def items_app(
    pool: asyncpg.Pool,
    agreements: Agreements,
    *,
    exports: asyncpg.Pool | None = None,
    client_keys: dict[str, str] | None = None,
) -> FastAPI:
    app = FastAPI()
    app.state.keys = KeyRing(
        admin_keys=[ADMIN], intake_keys={"intake-key-0123456789": "jira"}, client_keys=client_keys
    )
    app.include_router(router)
    set_state(app, ItemReads(pool, exports or pool, agreements))

    async def healthy() -> dict[str, str]:
        return {}

    add_operational_routes(app, registry=CollectorRegistry(), health=healthy)
    return app


def http_to(
    app: FastAPI, key: str = ADMIN
) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, key, base_url="http://metering", timeout=60)


async def every_page(
    http: httpx.AsyncClient, params: dict[str, Any], *, limit: int
) -> tuple[list[ItemDocument], list[ItemPage]]:
    """Every item of a listing, following next_cursor; and the pages."""
    pages: list[ItemPage] = []
    cursor: str | None = None
    while True:
        response = await http.get(
            "/v1/items", params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        page = _PAGE.decode(response.content)
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            return [item for p in pages for item in p.items], pages


def csv_cells(document: ItemDocument) -> list[str]:
    """A document's CSV row as SPEC §13 writes it: null an empty cell, booleans true/false."""
    row = msgspec.to_builtins(document)
    return [
        ""
        if row[name] is None
        else ("true" if row[name] else "false")
        if isinstance(row[name], bool)
        else str(row[name])
        for name in CSV_COLUMNS
    ]


# --- one item -----------------------------------------------------------------------------------


async def test_an_item_document_holds_every_field_and_its_history_oldest_first(
    pool: asyncpg.Pool,
) -> None:
    client = client_id("doc")
    # 02:30Z on November 1st is 22:30 on October 31st in New York: period 2026-10.
    completed = datetime(2026, 11, 1, 2, 30, 0, 125_000, tzinfo=UTC)
    await seed_items(
        pool,
        [
            LedgerItem(
                client,
                "T-1",
                completed,
                service_line="data_entry",
                complexity="standard",
                units=250,
                rule_id="keying",
                agreement_version=2,
                late=True,
                received_at=completed + timedelta(seconds=3),
                source="zendesk",
                opened_at=datetime(2026, 10, 30, 9, 0, tzinfo=UTC),
                handling_seconds=900,
            )
        ],
    )
    await seed_changes(
        pool,
        [
            LedgerChange(
                client,
                "T-1",
                OCTOBER + timedelta(days=40, microseconds=10),
                "unclassified",
                "none",
                "accounting",
                "basic",
                "rc-1",
                "misfiled",
            ),
            LedgerChange(
                client,
                "T-1",
                OCTOBER + timedelta(days=41),
                "accounting",
                "basic",
                "data_entry",
                "standard",
                "rc-2",
                "client dispute #42",
            ),
        ],
    )
    app = items_app(pool, Agreements({client: agreement_for(client)}))
    async with http_to(app) as http:
        response = await http.get(f"/v1/items/{client}/T-1")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "client_id": client,
        "id": "T-1",
        "source": "zendesk",
        "completed_at": "2026-11-01T02:30:00.125Z",
        "opened_at": "2026-10-30T09:00:00Z",
        "received_at": "2026-11-01T02:30:03.125Z",
        "period": "2026-10",
        "late": True,
        "status": "classified",
        "service_line": "data_entry",
        "complexity": "standard",
        "rule_id": "keying",
        "agreement_version": 2,
        "units": 250,
        "handling_seconds": 900,
        "weighted_units": "500",  # standard (2) × 250 units: data_entry is on a units basis
        "history": [
            {
                "at": "2026-11-10T04:00:00.00001Z",
                "from": None,
                "to": {"service_line": "accounting", "complexity": "basic"},
                "reclassification": "rc-1",
                "reason": "misfiled",
            },
            {
                "at": "2026-11-11T04:00:00Z",
                "from": {"service_line": "accounting", "complexity": "basic"},
                "to": {"service_line": "data_entry", "complexity": "standard"},
                "reclassification": "rc-2",
                "reason": "client dispute #42",
            },
        ],
    }


async def test_unclassified_and_agreementless_items_show_nulls_and_zero_weight(
    pool: asyncpg.Pool,
) -> None:
    with_agreement, without = client_id("unc"), client_id("none")
    at = datetime(2026, 11, 1, 2, 30, tzinfo=UTC)
    await seed_items(
        pool,
        [
            LedgerItem(
                with_agreement,
                "U-1",
                at,
                service_line="unclassified",
                complexity="none",
                rule_id=None,
            ),
            LedgerItem(without, "N-1", at, agreement_version=None, received_at=at),
        ],
    )
    app = items_app(pool, Agreements({with_agreement: agreement_for(with_agreement)}))
    async with http_to(app) as http:
        unclassified = (await http.get(f"/v1/items/{with_agreement}/U-1")).json()
        agreementless = (await http.get(f"/v1/items/{without}/N-1")).json()
    assert {k: unclassified[k] for k in ("status", "service_line", "complexity", "rule_id")} == {
        "status": "unclassified",
        "service_line": None,
        "complexity": None,
        "rule_id": None,
    }
    assert (unclassified["weighted_units"], unclassified["history"]) == ("0", [])
    assert (unclassified["opened_at"], unclassified["handling_seconds"]) == (None, None)
    # No agreement: placed in UTC (November), nothing weighs anything.
    assert agreementless["period"] == "2026-11"
    assert (agreementless["agreement_version"], agreementless["weighted_units"]) == (None, "0")
    assert agreementless["status"] == "classified"


async def test_an_unknown_item_or_client_is_404(pool: asyncpg.Pool) -> None:
    client = client_id("nf")
    await seed_items(pool, [LedgerItem(client, "T-1", OCTOBER)])
    app = items_app(pool, Agreements())
    async with http_to(app) as http:
        assert (await http.get(f"/v1/items/{client}/T-1")).status_code == 200
        assert (await http.get(f"/v1/items/{client}/T-2")).status_code == 404
        assert (await http.get(f"/v1/items/{client}x/T-1")).status_code == 404


async def test_an_id_with_a_slash_or_any_unicode_is_found(pool: asyncpg.Pool) -> None:
    client = client_id("slash")
    ids = ["AP/2026/17", "ünï 🙂", "a?b#c", "100%"]
    await seed_items(pool, [LedgerItem(client, i, OCTOBER) for i in ids])
    app = items_app(pool, Agreements())
    async with http_to(app) as http:
        for item_id in ids:
            response = await http.get(f"/v1/items/{client}/{quote(item_id, safe='')}")
            assert response.status_code == 200, (item_id, response.text)
            assert response.json()["id"] == item_id


# --- listing ------------------------------------------------------------------------------------


async def test_pages_follow_the_instant_then_the_id_in_code_point_order_through_ties(
    pool: asyncpg.Pool,
) -> None:
    client = client_id("order")
    tie = OCTOBER + timedelta(days=3)
    tied_ids = ["B", "a", "Z", "é", "ä", "10", "9", "a/b", "ß", "€", "😀", "ｚ", "a b", "A"]
    items = [LedgerItem(client, i, tie) for i in tied_ids]
    items += [LedgerItem(client, "early", tie - timedelta(microseconds=1))]
    items += [LedgerItem(client, "late", tie + timedelta(microseconds=1))]
    items += [LedgerItem(client, f"day-{n}", OCTOBER + timedelta(days=n)) for n in (0, 10, 30)]
    # Outside New York's October: before its first instant, and at its end (exclusive).
    items += [
        LedgerItem(client, "september", OCTOBER - timedelta(microseconds=1)),
        LedgerItem(client, "november", OCTOBER + timedelta(days=31)),
    ]
    await seed_items(pool, items)
    app = items_app(pool, Agreements({client: agreement_for(client)}))
    # Python compares str by code point, as PostgreSQL's "C" collation compares UTF-8 bytes.
    expected = ["day-0", "early", *sorted(tied_ids), "late", "day-10", "day-30"]
    async with http_to(app) as http:
        for limit in (1, 3, 5, len(expected), 1000):
            listed, pages = await every_page(
                http, {"client_id": client, "period": "2026-10"}, limit=limit
            )
            assert [item.id for item in listed] == expected, limit
            assert all(len(p.items) == limit for p in pages[:-1])
            # next_cursor is null on the page holding the last match, never on an empty page.
            assert pages[-1].items and pages[-1].next_cursor is None
            assert len(pages) == -(-len(expected) // limit)


async def test_every_filter_narrows_the_listing(pool: asyncpg.Pool) -> None:
    client = client_id("filter")
    classes = [
        ("accounting", "complex", "ap-invoices-large"),
        ("accounting", "basic", "default"),
        ("it_support", "basic", "password-reset"),
        ("it_support", "complex", "builtin:it_support"),
        ("unclassified", "none", None),
    ]
    items = [
        LedgerItem(
            client,
            f"i-{n}",
            OCTOBER + timedelta(hours=n),
            service_line=line,
            complexity=complexity,
            rule_id=rule,
        )
        for n, (line, complexity, rule) in enumerate(classes * 3)
    ]
    await seed_items(pool, items)
    app = items_app(pool, Agreements({client: agreement_for(client)}))

    async def ids(**filters: str) -> set[str]:
        listed, _ = await every_page(
            http, {"client_id": client, "period": "2026-10", **filters}, limit=4
        )
        return {item.id for item in listed}

    def where(test: Any) -> set[str]:
        return {i.item_id for i in items if test(i)}

    async with http_to(app) as http:
        assert await ids() == where(lambda i: True)
        assert await ids(service_line="accounting") == where(
            lambda i: i.service_line == "accounting"
        )
        assert await ids(complexity="basic") == where(lambda i: i.complexity == "basic")
        assert await ids(service_line="it_support", complexity="complex") == where(
            lambda i: (i.service_line, i.complexity) == ("it_support", "complex")
        )
        assert await ids(rule_id="password-reset") == where(lambda i: i.rule_id == "password-reset")
        assert await ids(status="unclassified") == where(lambda i: i.service_line == "unclassified")
        assert await ids(status="classified") == where(lambda i: i.service_line != "unclassified")
        assert await ids(status="unclassified", service_line="accounting") == set()
        assert len(await ids(rule_id="no-such-rule")) == 0


async def test_a_listing_of_a_period_without_items_is_one_empty_page(pool: asyncpg.Pool) -> None:
    app = items_app(pool, Agreements())
    async with http_to(app) as http:
        response = await http.get("/v1/items", params={"client_id": "nobody", "period": "2026-10"})
    assert response.json() == {"items": [], "next_cursor": None}


async def test_a_cursor_from_another_listing_is_still_only_a_position(pool: asyncpg.Pool) -> None:
    client = client_id("cursor")
    await seed_items(
        pool, [LedgerItem(client, f"c-{n}", OCTOBER + timedelta(days=n)) for n in range(4)]
    )
    app = items_app(pool, Agreements({client: agreement_for(client)}))
    async with http_to(app) as http:
        first = (
            await http.get(
                "/v1/items", params={"client_id": client, "period": "2026-10", "limit": 2}
            )
        ).json()
        cursor = first["next_cursor"]
        # The same cursor with a filter: the items after its position that match.
        filtered = await http.get(
            "/v1/items",
            params={"client_id": client, "period": "2026-10", "cursor": cursor, "rule_id": "cs"},
        )
        tampered = await http.get(
            "/v1/items", params={"client_id": client, "period": "2026-10", "cursor": cursor[:-2]}
        )
    assert [i["id"] for i in filtered.json()["items"]] == ["c-2", "c-3"]
    assert tampered.status_code == 422
    assert tampered.json()["detail"][0]["loc"] == ["query", "cursor"]


# --- keys ---------------------------------------------------------------------------------------


async def test_a_client_key_reads_its_own_items_only(pool: asyncpg.Pool) -> None:
    mine, theirs = client_id("mine"), client_id("theirs")
    key = f"client-key-{mine}"
    await seed_items(pool, [LedgerItem(mine, "M-1", OCTOBER), LedgerItem(theirs, "T-1", OCTOBER)])
    app = items_app(pool, Agreements(), client_keys={key: mine})
    async with http_to(app, key) as http:
        own = await http.get(f"/v1/items/{mine}/M-1")
        other = await http.get(f"/v1/items/{theirs}/T-1")
        other_unknown = await http.get(f"/v1/items/{theirs}/NOPE")
        listed = await http.get("/v1/items", params={"client_id": mine, "period": "2026-10"})
        omitted = await http.get("/v1/items", params={"period": "2026-10"})
        other_listed = await http.get(
            "/v1/items", params={"client_id": theirs, "period": "2026-10"}
        )
        exported = await http.get(
            "/v1/items", params={"period": "2026-10"}, headers={"Accept": "text/csv"}
        )
        other_exported = await http.get(
            "/v1/items",
            params={"client_id": theirs, "period": "2026-10"},
            headers={"Accept": "application/x-ndjson"},
        )
    assert own.status_code == 200 and own.json()["id"] == "M-1"
    assert (other.status_code, other_unknown.status_code) == (403, 403)
    assert [i["id"] for i in listed.json()["items"]] == ["M-1"]
    assert omitted.json() == listed.json()  # an omitted client_id is the key's own
    assert other_listed.status_code == 403 and other_exported.status_code == 403
    assert [row[1] for row in csv.reader(io.StringIO(exported.text))] == ["id", "M-1"]


# --- exports ------------------------------------------------------------------------------------

AWKWARD = [
    "plain",
    "comma, inside",
    'a "quoted" id',
    "line\nbreak",
    "carriage\r\nreturn",
    "ünïcödé 🙂 – ½",
    " leading and trailing ",
    '"',
    "=1+1",
]


def awkward_items(client: str) -> tuple[list[LedgerItem], list[LedgerChange]]:
    """Items whose every field tests the CSV: quotes, commas, newlines, unicode, nulls, fractional
    seconds (trailing zeros and none), every class, late, unclassified and agreementless ones."""
    classes = [(line, c) for line in SERVICE_LINES for c in COMPLEXITIES] + [
        ("unclassified", "none")
    ]
    items = []
    for n, text in enumerate(AWKWARD * 3):
        line, complexity = classes[n % len(classes)]
        completed = OCTOBER + timedelta(days=n % 28, microseconds=[0, 500_000, 120, 1][n % 4])
        items.append(
            LedgerItem(
                client,
                f"{text}-{n}",
                completed,
                service_line=line,
                complexity=complexity,
                units=1 + n * 37,
                rule_id=None if line == "unclassified" else f"rule {text}",
                agreement_version=None if n % 5 == 0 else 1 + n % 3,
                late=n % 2 == 0,
                received_at=None if n % 7 == 0 else completed + timedelta(microseconds=10 * n),
                source=text,
                opened_at=None if n % 3 else completed - timedelta(hours=n, microseconds=3),
                handling_seconds=None if n % 4 == 1 else n * 60,
            )
        )
    changes = [
        LedgerChange(
            client,
            items[1].item_id,
            OCTOBER + timedelta(days=35),
            "unclassified",
            "none",
            "hr",
            "basic",
            "rc,1",
            'why "not"\nhere',
        ),
        LedgerChange(
            client,
            items[1].item_id,
            OCTOBER + timedelta(days=36, microseconds=5),
            "hr",
            "basic",
            "hr",
            "complex",
            "rc-2",
            "é",
        ),
    ]
    return items, changes


async def test_the_csv_export_says_what_the_json_documents_say(
    pool: asyncpg.Pool, database_url: str
) -> None:
    client = client_id("csv")
    items, changes = awkward_items(client)
    await seed_items(pool, items)
    await seed_changes(pool, changes)
    weights = {"basic": "0.25", "standard": "1.5", "complex": "2.125"}
    # Whatever the server's DateStyle, the export writes SPEC's timestamps.
    exports = await asyncpg.create_pool(
        database_url, min_size=1, max_size=1, server_settings={"DateStyle": "SQL, DMY"}
    )
    assert exports is not None
    agreements = Agreements({client: agreement_for(client, weights=weights)})
    app = items_app(pool, agreements, exports=exports)
    params = {"client_id": client, "period": "2026-10"}
    try:
        async with http_to(app) as http:
            documents, _ = await every_page(http, params, limit=7)
            response = await http.get("/v1/items", params=params, headers={"Accept": "text/csv"})
    finally:
        await exports.close()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert len(documents) == len(items)
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1:] == [csv_cells(document) for document in documents]
    # What the comparison covers: each kind of value appears.
    cells = {name: {row[i] for row in rows[1:]} for i, name in enumerate(CSV_COLUMNS)}
    assert "" in cells["opened_at"] and "" in cells["agreement_version"]
    assert {"true", "false"} == cells["late"]
    assert any(c.endswith(".5Z") for c in cells["completed_at"])
    assert any(c.endswith(".00012Z") for c in cells["completed_at"])
    assert any("." in c for c in cells["weighted_units"]) and "0" in cells["weighted_units"]
    assert "unclassified" in cells["status"] and set(AWKWARD) <= cells["source"]


async def test_the_ndjson_export_is_every_whole_document_history_included(
    pool: asyncpg.Pool,
) -> None:
    client = client_id("ndjson")
    items, changes = awkward_items(client)
    await seed_items(pool, items)
    await seed_changes(pool, changes)
    app = items_app(pool, Agreements({client: agreement_for(client)}))
    params = {"client_id": client, "period": "2026-10"}
    async with http_to(app) as http:
        documents, _ = await every_page(http, params, limit=1000)
        response = await http.get(
            "/v1/items", params=params, headers={"Accept": "application/x-ndjson"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.content.split(b"\n")
    assert lines[-1] == b""
    exported = [_DOCUMENT.decode(line) for line in lines[:-1]]
    assert exported == documents
    assert [len(d.history) for d in exported if d.history] == [2]


async def test_an_export_ignores_limit_and_cursor_and_holds_every_match(
    pool: asyncpg.Pool,
) -> None:
    client = client_id("big")
    count = 3000
    start, _ = period_bounds(parse_period("2026-10"), "America/New_York")
    await seed_items(
        pool,
        [
            LedgerItem(
                client,
                f"item-{n:05d}",
                start + timedelta(seconds=(n * 7919) % (30 * 86400)),
                service_line=("data_entry", "hr", "unclassified")[n % 3],
                complexity=("standard", "basic", "none")[n % 3],
                units=n % 50 + 1,
            )
            for n in range(count)
        ],
    )
    app = items_app(pool, Agreements({client: agreement_for(client)}))
    params: dict[str, str | int] = {"client_id": client, "period": "2026-10", "limit": 5}
    async with http_to(app) as http:
        first = (await http.get("/v1/items", params=params)).json()
        beyond = {**params, "cursor": first["next_cursor"]}
        csv_answer = await http.get("/v1/items", params=beyond, headers={"Accept": "text/csv"})
        ndjson_answer = await http.get(
            "/v1/items", params=beyond, headers={"Accept": "application/x-ndjson"}
        )
        unclassified = await http.get(
            "/v1/items",
            params={**params, "status": "unclassified"},
            headers={"Accept": "text/csv"},
        )
    rows = list(csv.reader(io.StringIO(csv_answer.text)))[1:]
    documents = [_DOCUMENT.decode(line) for line in ndjson_answer.content.splitlines()]
    assert len(rows) == len(documents) == count
    assert [row[1] for row in rows] == [d.id for d in documents]
    assert [(d.completed_at, d.id) for d in documents] == sorted(
        (d.completed_at, d.id) for d in documents
    )  # same-length UTC texts sort as their instants
    assert len(list(csv.reader(io.StringIO(unclassified.text)))) == 1 + count // 3


# --- the plan -----------------------------------------------------------------------------------


async def test_listing_and_exporting_walk_the_period_index_in_its_order(
    pool: asyncpg.Pool,
) -> None:
    client = client_id("plan")
    await seed_items(
        pool, [LedgerItem(client, f"p-{n}", OCTOBER + timedelta(minutes=n)) for n in range(50)]
    )
    start, end = period_bounds(parse_period("2026-10"), "America/New_York")
    selection = ItemSelection(client, "2026-10", start, end, rule_id="cs")
    after = selection.first()
    page_args = [*items_store._selected(selection, after), 101]
    weights = class_weights(None)
    csv_args = [
        *items_store._selected(selection, after),
        "2026-10",
        list(weights.per_item),
        list(weights.per_unit),
    ]
    async with pool.acquire() as conn, conn.transaction():
        # The planner's choice on a small table is not the point: could it walk the index
        # without sorting? A sort would mean the order and the index disagree (collation).
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        for sql, args in ((items_store._PAGE, page_args), (items_store._CSV, csv_args)):
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
            text = str(plan)
            assert "items_by_time" in text, text
            assert "'Sort'" not in text and "Sort Key" not in text, text


# --- a client that goes away --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """`app` behind a real uvicorn on a free port (so a client can really go away)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
        if task.done():
            task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def busy_readers(pool: asyncpg.Pool) -> list[str]:
    """The states of the other backends inside a read of the items ledger (an export is
    `active` in its COPY, or `idle in transaction` between its cursor's fetches). The COPY's
    text is longer than pg_stat_activity keeps: it is known by its start."""
    rows = await pool.fetch(
        """SELECT state FROM pg_stat_activity
            WHERE pid <> pg_backend_pid() AND datname = current_database()
              AND (query LIKE '%metering.item%' OR query LIKE 'COPY (SELECT %')
              AND state <> 'idle'"""
    )
    return [row["state"] for row in rows]


async def settled(condition: Any, *, what: str) -> None:
    """Waits until `condition()` holds (a bounded wait: a leak fails the test, it does not hang)."""
    for _ in range(200):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.parametrize("accept", ["text/csv", "application/x-ndjson"])
async def test_a_client_leaving_mid_export_gives_its_connection_back(
    pool: asyncpg.Pool, database_url: str, accept: str
) -> None:
    client = client_id("gone")
    # About 100 MB (compressed to little in the table): far more than every buffer on the way
    # holds (the reader's socket takes 64 KiB; PostgreSQL's and the pool's sockets may take tens
    # of MB), so the export is still running, waiting for its reader, when the reader goes.
    count = 10_000
    await seed_items(
        pool,
        (
            LedgerItem(client, f"g-{n:06d}", OCTOBER + timedelta(seconds=n), source="s" * 10_000)
            for n in range(count)
        ),
    )
    exports = await create_pool(database_url, size=1)  # one connection: a leak would be plain
    try:
        app = items_app(pool, Agreements(), exports=exports)
        small_window = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)]
        async with (
            serving(app) as url,
            httpx.AsyncClient(
                timeout=60, transport=httpx.AsyncHTTPTransport(socket_options=small_window)
            ) as http,
        ):
            params = {"client_id": client, "period": "2026-10"}
            headers = {"Authorization": f"Bearer {ADMIN}", "Accept": accept}
            async with http.stream("GET", f"{url}/v1/items", params=params, headers=headers) as r:
                assert r.status_code == 200
                chunks = r.aiter_raw()  # held: dropping it would close the connection now
                assert await anext(chunks)
                # The export is under way, waiting for this reader.
                assert await busy_readers(pool) != []
                assert exports.get_idle_size() == 0
            # The client has gone: the export stops and its connection is back in the pool.
            await settled(lambda: _idle(exports), what="the export's connection back in the pool")
            await settled(lambda: _none(pool), what="the export's query ended")
            # And the pool's one connection serves the next export whole.
            response = await http.get(f"{url}/v1/items", params=params, headers=headers)
            assert response.status_code == 200
            assert len(response.content.splitlines()) == count + (accept == "text/csv")
    finally:
        await exports.close()


async def _idle(exports: asyncpg.Pool) -> bool:
    return exports.get_idle_size() == exports.get_size()


async def _none(pool: asyncpg.Pool) -> bool:
    return await busy_readers(pool) == []


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["csv", "ndjson"])
async def test_the_cli_exports_exactly_what_the_api_streams(
    pool: asyncpg.Pool, tmp_path: Path, form: str
) -> None:
    client = client_id("cli")
    items, changes = awkward_items(client)
    await seed_items(pool, items)
    await seed_changes(pool, changes)
    app = items_app(pool, Agreements({client: agreement_for(client)}))
    target = tmp_path / f"items.{form}"
    parser = argparse.ArgumentParser(prog="tierline")
    add_items_commands(parser.add_subparsers(dest="command", required=True))
    async with serving(app) as url:
        command = ["items", "export", "--metering-url", url, "--client", client]
        args = parser.parse_args(
            [*command, "--period", "2026-10", "--format", form, "-o", str(target)]
        )
        err = io.StringIO()
        # The command is synchronous: it runs in a thread while this loop serves it.
        code = await asyncio.to_thread(
            run_cli, args, err=err, environ={"TIERLINE_ADMIN_KEY": ADMIN}
        )
        async with httpx.AsyncClient(timeout=60) as http:
            direct = await http.get(
                f"{url}/v1/items",
                params={"client_id": client, "period": "2026-10"},
                headers={
                    "Authorization": f"Bearer {ADMIN}",
                    "Accept": "text/csv" if form == "csv" else "application/x-ndjson",
                },
            )
    assert code == 0, err.getvalue()
    assert target.read_bytes() == direct.content
    assert f"export {len(items)} items" in err.getvalue()
