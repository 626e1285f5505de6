"""The items API (SPEC §10 "Items", §13): every item as metered and as classified now, one at a
time, in pages, or the whole of a period exported as CSV or NDJSON — the statement behind an
invoice. Admin key, or the client's own key (another client's id is 403, an omitted `client_id`
is the key's own).

`GET /v1/items` answers by `Accept`: JSON pages of `limit` (`next_cursor` to go on); with
`text/csv` or `application/x-ndjson` every match in one streamed response (`limit` and
`cursor` are checked but do not apply: an export is never paged). Exports read through a pool
of their own, so a slow reader of a large export never holds back counting.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from services.metering import items_store
from services.metering.api import CLIENT_ID_PARAMETER, PERIOD_PARAMETER, checked_period
from services.metering.items import (
    DEFAULT_LIMIT,
    MAX_CURSOR,
    MAX_ITEM_ID,
    MAX_LIMIT,
    ItemSelection,
    ItemWeights,
    Position,
    class_weights,
    decode_cursor,
    encode_cursor,
    item_document,
    negotiate,
)
from shared.contracts.items import (
    CSV,
    CSV_COLUMNS,
    JSON,
    NDJSON,
    ItemDocument,
    ItemPage,
    encode_document,
)
from shared.domain.agreement.fields import CLIENT_ID_PATTERN, Complexity, ServiceLine
from shared.domain.agreement.pricing import Pricing
from shared.domain.periods import period_bounds, period_of
from shared.infra.agreement_view import Agreements
from shared.infra.http import (
    READERS,
    ReaderCaller,
    invalid_parameter,
    scoped_client,
    state_of,
)
from shared.infra.openapi import Responses, error_responses, inline_struct_schema
from shared.infra.streaming import Emit, StreamedResponse, produced

#: Items per batch of the NDJSON export (one fetch from the cursor, one history query).
EXPORT_BATCH: Final = 2000
#: About how much of the NDJSON export is handed to the response at once.
CHUNK_BYTES: Final = 64 * 1024
#: The longest an export may take (a reader that stalls holds a connection of the export pool
#: until then); a million items take seconds.
EXPORT_SECONDS: Final = 3600.0
#: Any text without U+0000 (PostgreSQL cannot hold it; JSON Schema patterns are ECMA-262).
_NO_NUL: Final = r"^[^\u0000]+$"


@dataclass(frozen=True)
class ItemReads:
    """What the items API reads: the ledger (`pool`), a small pool of its own for exports, and
    the agreements in force (the timezone of a client's periods, the weights)."""

    pool: asyncpg.Pool
    exports: asyncpg.Pool
    agreements: Agreements

    def terms(self, client_id: str) -> tuple[str, Pricing | None]:
        """The timezone of the client's periods and its weights: its current agreement's, or
        UTC and none."""
        agreement = self.agreements.get(client_id)
        if agreement is None:
            return "UTC", None
        return agreement.timezone, agreement.pricing


ItemReadsDep = Annotated[ItemReads, Depends(state_of(ItemReads))]
router = APIRouter(tags=["items"])

_DOCUMENT: Final = inline_struct_schema(ItemDocument)
_PAGE: Final = inline_struct_schema(ItemPage)
_CSV_SCHEMA: Final = {
    "type": "string",
    "description": "A header row (" + ",".join(CSV_COLUMNS) + "), then one row per item",
}
_NDJSON_SCHEMA: Final = {"type": "string", "description": "One item document per line"}
_ONE_ITEM_RESPONSES: Final[Responses] = {
    200: {"description": "The item", "content": {JSON: {"schema": _DOCUMENT}}},
    **error_responses(
        **{
            "403": "Not an admin key, nor the key of this client",
            "404": "No such item of this client",
            "422": "A malformed client id or item id",
        }
    ),
}
_LIST_RESPONSES: Final[Responses] = {
    200: {
        "description": (
            "A page of items (JSON), or every matching item streamed in one response "
            "(Accept: text/csv or application/x-ndjson)"
        ),
        "content": {
            JSON: {"schema": _PAGE},
            CSV: {"schema": _CSV_SCHEMA},
            NDJSON: {"schema": _NDJSON_SCHEMA},
        },
    },
    **error_responses(
        **{
            "403": "Not an admin key, or a client key naming another client",
            "422": "A missing or malformed parameter (named)",
        }
    ),
}


@router.get(
    "/v1/items/{client_id}/{item_id:path}",
    summary="One item as metered, its class now and every change of it",
    response_class=Response,
    dependencies=READERS,
    responses=_ONE_ITEM_RESPONSES,
)
async def get_item(
    client_id: Annotated[
        str, Path(pattern=CLIENT_ID_PARAMETER, description=f"The client, `{CLIENT_ID_PATTERN}`")
    ],
    item_id: Annotated[
        str,
        Path(min_length=1, max_length=MAX_ITEM_ID, pattern=_NO_NUL, description="The item's id"),
    ],
    caller: ReaderCaller,
    reads: ItemReadsDep,
) -> Response:
    client = scoped_client(caller, client_id)
    assert client is not None
    found = await items_store.find_item(reads.pool, client, item_id)
    if found is None:
        return _json({"detail": f"no item {item_id!r} of client {client!r}"}, 404)
    item, history = found
    tz, pricing = reads.terms(client)
    period = period_of(item.completed_at, tz).key
    document = item_document(item, history, period=period, weights=ItemWeights(pricing))
    return Response(encode_document(document), media_type=JSON)


@router.get(
    "/v1/items",
    summary="A period's items, in pages or exported whole (CSV, NDJSON)",
    description=(
        "Ordered by `completed_at` (the instant), then `id` in code-point order. `client_id` "
        "and `period` are required with an admin key; a client key reads its own client "
        "(an omitted `client_id` is its own). JSON answers a page of `limit` items with "
        "`next_cursor` (null on the page holding the last match). `Accept: text/csv` (a header "
        "row, then one row per item, without `history`; null is an empty cell) or "
        "`Accept: application/x-ndjson` (one whole item document per line) streams every "
        "matching item in one response: `limit` and `cursor` are checked but do not apply."
    ),
    response_class=Response,
    dependencies=READERS,
    responses=_LIST_RESPONSES,
)
async def list_items(
    request: Request,
    caller: ReaderCaller,
    reads: ItemReadsDep,
    period: Annotated[
        str,
        Query(pattern=PERIOD_PARAMETER, description="`YYYY-MM` within 2000-01..2099-12"),
    ],
    client_id: Annotated[
        str | None,
        Query(
            pattern=CLIENT_ID_PARAMETER,
            description="Required with an admin key; a client key's own when left out",
        ),
    ] = None,
    service_line: ServiceLine | None = None,
    complexity: Complexity | None = None,
    rule_id: Annotated[str | None, Query(min_length=1, max_length=200, pattern=_NO_NUL)] = None,
    status: Literal["classified", "unclassified"] | None = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (JSON only)")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_CURSOR, description="`next_cursor` of the last page"),
    ] = None,
) -> Response:
    client = scoped_client(caller, client_id)
    if client is None:
        return invalid_parameter("query", "client_id", "required with an admin key")
    try:
        wanted = checked_period(period)
    except ValueError as error:
        return invalid_parameter("query", "period", str(error))
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except ValueError as error:
        return invalid_parameter("query", "cursor", str(error))
    tz, pricing = reads.terms(client)
    start, end = period_bounds(wanted, tz)
    selection = ItemSelection(
        client_id=client,
        period=wanted.key,
        start=start,
        end=end,
        service_line=service_line,
        complexity=complexity,
        rule_id=rule_id,
        status=status,
    )
    answer = negotiate(request.headers.get("accept"))
    if answer == "csv":
        return _csv_export(reads, selection, pricing)
    if answer == "ndjson":
        return _ndjson_export(reads, selection, pricing)
    found = await items_store.page(reads.pool, selection, after or selection.first(), limit + 1)
    more = len(found) > limit
    weights = ItemWeights(pricing)
    documents = [
        item_document(item, history, period=selection.period, weights=weights)
        for item, history in found[:limit]
    ]
    last = found[limit - 1][0] if more else None
    page = ItemPage(
        items=documents,
        next_cursor=encode_cursor(Position(last.completed_at, last.item_id)) if last else None,
    )
    return Response(encode_document(page), media_type=JSON)


def _csv_export(reads: ItemReads, selection: ItemSelection, pricing: Pricing | None) -> Response:
    weights = class_weights(pricing)

    async def write(emit: Emit) -> None:
        await items_store.copy_csv(
            reads.exports, selection, weights, output=emit, timeout=EXPORT_SECONDS
        )

    return StreamedResponse(produced(write), media_type=CSV, headers=_attachment(selection, "csv"))


def _ndjson_export(reads: ItemReads, selection: ItemSelection, pricing: Pricing | None) -> Response:
    async def write(emit: Emit) -> None:
        batches = items_store.export(reads.exports, selection, batch=EXPORT_BATCH)
        weights = ItemWeights(pricing)
        chunk = bytearray()
        async with asyncio.timeout(EXPORT_SECONDS), contextlib.aclosing(batches):
            async for batch in batches:
                for item, history in batch:
                    document = item_document(
                        item, history, period=selection.period, weights=weights
                    )
                    chunk += encode_document(document)
                    chunk += b"\n"
                    if len(chunk) >= CHUNK_BYTES:
                        await emit(bytes(chunk))
                        chunk.clear()
            if chunk:
                await emit(bytes(chunk))

    return StreamedResponse(
        produced(write), media_type=NDJSON, headers=_attachment(selection, "ndjson")
    )


def _attachment(selection: ItemSelection, extension: str) -> dict[str, str]:
    name = f"items-{selection.client_id}-{selection.period}.{extension}"
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _json(body: dict[str, str], status: int) -> Response:
    return Response(encode_document(body), status_code=status, media_type=JSON)
