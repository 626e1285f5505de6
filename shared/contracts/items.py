"""The item document of SPEC §10 "Items" (metering: `GET /v1/items/{client_id}/{item_id}`, each
entry of `GET /v1/items`, each line of its NDJSON export) and the CSV export's columns: one typed
definition the API answers with, its OpenAPI document shows and the tests decode.

msgspec Structs, not pydantic models: an export writes up to millions of them, and a Struct
encodes in about a microsecond. Values are already in their wire form (SPEC §13): timestamps
are `wire.utc_instant` text, weighted units `money.format_decimal` text; the Struct fixes the
fields, their order (the CSV columns follow it) and what each may hold.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from shared.contracts.wire import DECIMAL_PATTERN
from shared.domain.agreement.fields import CLIENT_ID_PATTERN, Complexity, ServiceLine

#: SPEC §13: RFC 3339 in UTC with `Z`, fractional seconds only when non-zero.
TIMESTAMP_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]*[1-9])?Z$"
)

Timestamp = Annotated[
    str,
    msgspec.Meta(
        pattern=TIMESTAMP_PATTERN,
        description="RFC 3339 in UTC, fractional seconds only when non-zero",
        extra_json_schema={"format": "date-time"},
    ),
]
DecimalText = Annotated[
    str, msgspec.Meta(pattern=DECIMAL_PATTERN, description="A plain decimal string")
]
ClientId = Annotated[str, msgspec.Meta(pattern=f"^{CLIENT_ID_PATTERN}$")]
ItemId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
PeriodKey = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM")]
Status = Literal["classified", "unclassified"]


class ItemClass(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A class: (service line, complexity)."""

    service_line: ServiceLine
    complexity: Complexity


class ItemChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One change of an item's class (a reclassification moved it); null is unclassified."""

    at: Timestamp
    from_: ItemClass | None = msgspec.field(name="from")
    to: ItemClass | None
    reclassification: Annotated[str, msgspec.Meta(description="The reclassification's id")]
    reason: str


class ItemDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An item as metered (its first copy), classified as it stands now (SPEC §10, §13)."""

    client_id: ClientId
    id: ItemId
    source: Annotated[str | None, msgspec.Meta(description="null only for items metered before")]
    completed_at: Timestamp
    opened_at: Timestamp | None
    received_at: Annotated[Timestamp | None, msgspec.Meta(description="When intake accepted it")]
    period: Annotated[
        PeriodKey,
        msgspec.Meta(description="In the timezone of the client's current agreement (else UTC)"),
    ]
    late: bool
    status: Status
    service_line: ServiceLine | None
    complexity: Complexity | None
    rule_id: str | None
    agreement_version: Annotated[
        int | None, msgspec.Meta(description="null when placed with no agreement")
    ]
    units: int
    handling_seconds: int | None
    weighted_units: Annotated[
        DecimalText,
        msgspec.Meta(
            description='At the current agreement\'s weights; "0" when unclassified or '
            "without an agreement"
        ),
    ]
    history: Annotated[list[ItemChange], msgspec.Meta(description="Oldest first")]


class ItemPage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A page of `GET /v1/items`: by completed_at (the instant), then id in code-point order."""

    items: list[ItemDocument]
    next_cursor: Annotated[
        str | None,
        msgspec.Meta(description="Pass as `cursor` for the next page; null on the last page"),
    ]


#: The CSV export's columns (SPEC §10, §13): the document's fields in order, without `history`.
CSV_COLUMNS: Final = tuple(name for name in ItemDocument.__struct_fields__ if name != "history")
#: The media types `GET /v1/items` answers in (`Accept`).
JSON: Final = "application/json"
CSV: Final = "text/csv"
NDJSON: Final = "application/x-ndjson"

encode_document = msgspec.json.Encoder().encode
