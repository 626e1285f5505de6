"""The client page (`GET /client`) and its JSON, for a client's own key (SPEC §2 "Client keys") or
an admin key: the client's overview read from the ledger, and its items relayed to metering.

Every route scopes what it reads with `scoped_client`: a client key reads its own client (also
when `client_id` is left out) and is 403 naming any other; an admin key names the client. The
item reads are forwarded to metering with the caller's own key, so metering holds the key to
the same scope itself; metering down or too slow is a 503 with `Retry-After`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Final, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from services.console.api import STATIC_DIR
from services.console.client import ClientReads
from services.console.documents import ClientOverview
from services.console.metering import MeteringItems, MeteringUnavailable, Relayed
from shared.contracts.items import ItemDocument, ItemPage
from shared.domain.agreement.fields import CLIENT_ID_PATTERN, Complexity, ServiceLine
from shared.domain.periods import parse_period
from shared.infra.db import TRANSIENT_ERRORS
from shared.infra.http import READERS, ReaderCaller, invalid_parameter, scoped_client, state_of
from shared.infra.openapi import (
    JSON,
    RETRY_AFTER,
    Responses,
    answer,
    error_responses,
    inline_struct_schema,
)

log = logging.getLogger(__name__)

#: SPEC §13: periods outside 2000-01..2099-12 are 422 on every endpoint; the pattern says it.
PERIOD_PATTERN: Final = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
CLIENT_ID_PARAMETER: Final = f"^{CLIENT_ID_PATTERN}$"
#: Metering's bounds (SPEC §10, §13): a bad value is the console's 422 before anything is sent.
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
MAX_ITEM_ID: Final = 128
MAX_CURSOR: Final = 1024
RETRY_AFTER_SECONDS: Final = "5"
#: Any text without U+0000 (JSON Schema patterns are ECMA-262).
_NO_NUL: Final = r"^[^\u0000]+$"

#: The dependencies giving what the lifespan set on the app (tests override them).
client_reads_of = state_of(ClientReads)
metering_of = state_of(MeteringItems)
ClientReadsDep = Annotated[ClientReads, Depends(client_reads_of)]
MeteringDep = Annotated[MeteringItems, Depends(metering_of)]
QueryClientId = Annotated[
    str | None,
    Query(
        pattern=CLIENT_ID_PARAMETER,
        description="Required with an admin key; a client key's own when left out (any other "
        "is 403)",
        examples=["acme"],
    ),
]
PathClientId = Annotated[
    str, Path(pattern=CLIENT_ID_PARAMETER, description=f"The client, `{CLIENT_ID_PATTERN}`")
]


def client_in_query(caller: ReaderCaller, client_id: QueryClientId = None) -> str | None:
    """The client a read names in its query, as the key may see it (`scoped_client`): decided
    before anything else the route depends on is asked for."""
    return scoped_client(caller, client_id)


def client_in_path(caller: ReaderCaller, client_id: PathClientId) -> str:
    """The client a read names in its path: the key's own, or any with an admin key."""
    client = scoped_client(caller, client_id)
    assert client is not None
    return client


#: Declared first in each route, so a key is refused before the route's state is asked for.
ScopedQueryClient = Annotated[str | None, Depends(client_in_query)]
ScopedPathClient = Annotated[str, Depends(client_in_path)]

_UNAVAILABLE: Final[Responses] = {
    503: answer(
        "Metering or PostgreSQL unavailable or too slow: retry after a while",
        headers=RETRY_AFTER,
    )
}
#: Metering's documents, relayed as they are (shared/contracts/items.py: one definition).
_ITEM_SCHEMA: Final = inline_struct_schema(ItemDocument)
_PAGE_SCHEMA: Final = inline_struct_schema(ItemPage)

router = APIRouter(tags=["client page"])


@router.get("/client", include_in_schema=False)
async def client_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "client.html", headers={"Cache-Control": "no-cache"})


def path_segment(text: str) -> str:
    """`text` as one path segment of the forwarded URL, whatever it holds: every reserved
    character escaped, and dots too, so an item id of `..` is not read as a dot segment."""
    return quote(text, safe="").replace(".", "%2E")


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS}
    )


def _client_required() -> JSONResponse:
    return invalid_parameter("query", "client_id", "required with an admin key")


@router.get(
    "/api/client/overview",
    summary="What the client page shows: a period's usage, tier ladder, service levels and "
    "commitment, invoices and notes",
    description=(
        "The period's usage as metering's usage API reports it (a closed period keeps its "
        "billed tier), every tier of the agreement with where the weighted units stand, the "
        "volume and scope tiers and the tier the period lands in, the period against the "
        "agreement's service levels (attainment, misses, the credit at stake at the period's "
        "tier fee) and its contract year against the annual commitment (committed spend so "
        "far, what remains), and the client's invoices and notes. A client key reads its own "
        "client; an admin key names one."
    ),
    response_model=ClientOverview,
    dependencies=READERS,
    responses={
        **error_responses(
            **{
                "403": "Not an admin or client key, or a client key naming another client",
                "422": "A malformed client id or period, or no client id with an admin key",
            }
        ),
        **_UNAVAILABLE,
    },
)
async def client_overview(
    client: ScopedQueryClient,
    reads: ClientReadsDep,
    period: Annotated[
        str | None,
        Query(
            pattern=PERIOD_PATTERN,
            description="`YYYY-MM`, 2000-01..2099-12; the open period when left out",
            examples=["2026-10"],
        ),
    ] = None,
) -> ClientOverview | Response:
    if client is None:
        return _client_required()
    try:
        return await reads.overview(
            client, parse_period(period) if period else None, now=datetime.now(UTC)
        )
    except TRANSIENT_ERRORS as error:
        log.warning("client overview: the database is unavailable", extra={"error": repr(error)})
        return _unavailable(f"the database is unavailable, retry later ({type(error).__name__})")


async def _relay(
    metering: MeteringItems, request: Request, path: str, params: dict[str, str]
) -> Response:
    authorization = request.headers.get("authorization", "")
    try:
        relayed: Relayed = await metering.get(path, params=params, authorization=authorization)
    except MeteringUnavailable as error:
        log.warning("item read: metering is unavailable", extra={"error": str(error)})
        return _unavailable(f"{error}; retry later")
    return Response(relayed.body, status_code=relayed.status, media_type=relayed.media_type)


@router.get(
    "/api/items",
    summary="A period's items with their class and the rule that placed each, in pages",
    description=(
        "Metering's `GET /v1/items` (SPEC §10) read with the caller's key: ordered by "
        "`completed_at`, then `id`; `next_cursor` fetches the next page (null on the last)."
    ),
    response_class=Response,
    dependencies=READERS,
    responses={
        200: {"description": "A page of items", "content": {JSON: {"schema": _PAGE_SCHEMA}}},
        **error_responses(
            **{
                "403": "Not an admin or client key, or a client key naming another client",
                "422": "A missing or malformed parameter (named)",
            }
        ),
        **_UNAVAILABLE,
    },
)
async def items(
    client: ScopedQueryClient,
    request: Request,
    metering: MeteringDep,
    period: Annotated[
        str, Query(pattern=PERIOD_PATTERN, description="`YYYY-MM`, 2000-01..2099-12")
    ],
    service_line: ServiceLine | None = None,
    complexity: Complexity | None = None,
    rule_id: Annotated[str | None, Query(min_length=1, max_length=200, pattern=_NO_NUL)] = None,
    status: Literal["classified", "unclassified"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_CURSOR, description="`next_cursor` of the last page"),
    ] = None,
) -> Response:
    if client is None:
        return _client_required()
    chosen = {
        "service_line": service_line,
        "complexity": complexity,
        "rule_id": rule_id,
        "status": status,
        "cursor": cursor,
    }
    params = {"client_id": client, "period": period, "limit": str(limit)}
    params |= {name: value for name, value in chosen.items() if value is not None}
    return await _relay(metering, request, "/v1/items", params)


@router.get(
    "/api/items/{client_id}/{item_id:path}",
    summary="One item with its provenance: its class now, the rule, and every change of it",
    description="Metering's `GET /v1/items/{client_id}/{item_id}` (SPEC §10) read with the "
    "caller's key.",
    response_class=Response,
    dependencies=READERS,
    responses={
        200: {"description": "The item", "content": {JSON: {"schema": _ITEM_SCHEMA}}},
        **error_responses(
            **{
                "403": "Not an admin key, nor the key of this client",
                "404": "No such item of this client",
                "422": "A malformed client id or item id",
            }
        ),
        **_UNAVAILABLE,
    },
)
async def item(
    client: ScopedPathClient,
    request: Request,
    metering: MeteringDep,
    item_id: Annotated[
        str,
        Path(min_length=1, max_length=MAX_ITEM_ID, pattern=_NO_NUL, description="The item's id"),
    ],
) -> Response:
    return await _relay(metering, request, f"/v1/items/{client}/{path_segment(item_id)}", {})
