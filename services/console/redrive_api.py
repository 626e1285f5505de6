"""The admin API for dead letters (SPEC §12): list, show and redrive them (admin key).

The key is checked before anything else, a redrive's body included (SPEC §13: any other key is
403 whatever the body); a redrive is recorded under the key's audit name (`Caller.name`).

`{topic}` is either a topic Tierline consumes (`workitems.completed`, `workitems.classified`,
`agreements`) or its dead-letter topic (`workitems.completed.dlq`, ...): both name the dead
letters of that topic, and a redrive always re-publishes to the origin topic, never elsewhere.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Final, Literal, Self

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from services.console.deadletters import DeadLetters, KafkaUnavailable, ListedDeadLetter
from services.console.monitor import iso_time
from services.console.redrive import (
    MAX_PAGE,
    Decision,
    Filter,
    Position,
    RedriveMark,
    UnknownTopic,
    key_text,
    parse_position,
    resolve_topic,
    tally,
    value_preview,
)
from shared.infra.db import TRANSIENT_ERRORS
from shared.infra.http import AdminCaller, state_of
from shared.infra.openapi import JSON, RETRY_AFTER, Responses, answer, inline_schema

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS: Final = "5"
_UNAVAILABLE: Final[tuple[type[BaseException], ...]] = (KafkaUnavailable, *TRANSIENT_ERRORS)
_MAX_PARTITION: Final = 2**31 - 1
_MAX_OFFSET: Final = 2**63 - 1
_CURSOR_PATTERN: Final = r"^[0-9]{1,10}:[0-9]{1,19}$"

TopicParam = Annotated[
    str,
    Path(
        description=(
            "A consumed topic (workitems.completed, workitems.classified, agreements) or its "
            "dead-letter topic (the same name + `.dlq`): both name that topic's dead letters."
        ),
        max_length=64,
    ),
]
PartitionParam = Annotated[int, Path(ge=0, le=_MAX_PARTITION)]
OffsetParam = Annotated[int, Path(ge=0, le=_MAX_OFFSET)]
FilterText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class Detail(BaseModel):
    """Why a request was refused."""

    detail: str


class PlaceOut(BaseModel):
    """Where a record is in a topic."""

    topic: str
    partition: int
    offset: int


class OriginOut(PlaceOut):
    """Where the dead letter's record was read, and which item of it the dead letter is."""

    item: int | None = Field(
        description=(
            "The item's 0-based index in the origin record's array (the dead letter holds that "
            "item alone: its `origin_item` header); null when it is the whole record"
        )
    )


class RedrivenOut(BaseModel):
    """A redrive of this dead letter, or of another dead letter of the same origin (record, or
    item of one)."""

    redriven_at: str = Field(description="RFC 3339, UTC")
    by: str = Field(description="`admin:` + the first 8 hex digits of the key's SHA-256")
    dead_letter: str = Field(description="PARTITION:OFFSET of the dead letter that was redriven")
    partition: int = Field(description="Where the re-published record landed in the origin")
    offset: int


class DeadLetterOut(BaseModel):
    partition: int
    offset: int
    time: str = Field(description="When it was dead-lettered, RFC 3339, UTC")
    key: str | None
    error: str | None
    error_type: str | None
    origin: OriginOut | None = Field(description="null when its origin headers are missing")
    redriven: RedrivenOut | None


class DeadLetterDetailOut(DeadLetterOut):
    headers: dict[str, str]
    value_preview: str = Field(description="The value as text, bad bytes replaced")
    value_bytes: int
    value_complete: bool = Field(description="false when value_preview was cut short")


class DeadLetterPageOut(BaseModel):
    dlq_topic: str
    origin_topic: str
    entries: list[DeadLetterOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the page with the last match"
    )
    scanned: int = Field(description="Dead letters examined for this page")


class PositionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    partition: Annotated[int, Field(ge=0, le=_MAX_PARTITION)]
    offset: Annotated[int, Field(ge=0, le=_MAX_OFFSET)]


class RedriveRequest(BaseModel):
    """Either `records` (explicit dead letters) or `all: true` (every match of the filters, in
    pages of `limit` from `cursor`); `dry_run` says what would happen and publishes nothing."""

    model_config = ConfigDict(extra="forbid", strict=True)

    records: Annotated[list[PositionIn], Field(min_length=1, max_length=MAX_PAGE)] | None = None
    all: bool = False
    error_contains: FilterText | None = None
    error_type: FilterText | None = None
    partition: Annotated[int, Field(ge=0, le=_MAX_PARTITION)] | None = None
    cursor: Annotated[str, Field(pattern=_CURSOR_PATTERN)] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        if (self.records is None) == (not self.all):
            raise ValueError("give either records or all: true, not both and not neither")
        filters = ("error_contains", "error_type", "partition", "cursor")
        if self.records is not None and any(getattr(self, f) is not None for f in filters):
            raise ValueError(f"{', '.join(filters)} apply only with all: true")
        return self


class RedriveResultOut(BaseModel):
    position: str = Field(description="PARTITION:OFFSET in the dead-letter topic")
    outcome: Literal["redriven", "would_redrive", "skipped", "failed"]
    reason: str | None
    published: PlaceOut | None = Field(description="Where the copy landed (outcome redriven)")


class RedriveOut(BaseModel):
    dlq_topic: str
    origin_topic: str
    dry_run: bool
    chosen: int
    redriven: int
    would_redrive: int
    skipped: int = Field(description="Already redriven: never published twice")
    failed: int
    results: list[RedriveResultOut]
    next_cursor: str | None = Field(
        description="With all: true, the cursor of the next page of matches; null when done"
    )


_ERRORS: Final[Responses] = {
    401: answer("No key or an unknown key", Detail),
    403: answer("Not an admin key", Detail),
    503: answer(
        "Kafka or PostgreSQL unavailable: retry after a while", Detail, headers=RETRY_AFTER
    ),
}
_UNKNOWN_TOPIC: Final[Responses] = {
    404: answer("Not a topic with dead letters", Detail),
}
_REDRIVE_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": inline_schema(RedriveRequest, mode="validation")}},
    }
}


async def redrive_request(request: Request) -> RedriveRequest:
    """The redrive body, read only after the key (a dependency declared after it): a 422 naming
    each problem, as FastAPI's own body validation would."""
    try:
        return RedriveRequest.model_validate_json(await request.body())
    except ValidationError as error:
        # Without the input: it may be bytes that are not UTF-8 (then no JSON could carry it).
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in problems]
        ) from None


def _mark_out(mark: RedriveMark | None) -> RedrivenOut | None:
    if mark is None:
        return None
    return RedrivenOut(
        redriven_at=mark.redriven_at.isoformat(timespec="seconds"),
        by=mark.by,
        dead_letter=str(mark.dead_letter),
        partition=mark.published.partition,
        offset=mark.published.offset,
    )


def _summary(entry: ListedDeadLetter) -> DeadLetterOut:
    record = entry.record
    origin = record.origin
    return DeadLetterOut(
        partition=record.partition,
        offset=record.offset,
        time=iso_time(record.timestamp_ms / 1000),
        key=key_text(record.key),
        error=record.header("error"),
        error_type=record.header("error_type"),
        origin=OriginOut(
            topic=origin.topic, partition=origin.partition, offset=origin.offset, item=origin.item
        )
        if origin
        else None,
        redriven=_mark_out(entry.mark),
    )


def _result(decision: Decision, origin_topic: str) -> RedriveResultOut:
    assert decision.outcome is not None
    published = decision.published
    return RedriveResultOut(
        position=str(decision.position),
        outcome=decision.outcome.value,
        reason=decision.reason,
        published=PlaceOut(
            topic=origin_topic, partition=published.partition, offset=published.offset
        )
        if published
        else None,
    )


def _unavailable(error: BaseException) -> JSONResponse:
    log.warning("dead letters: a dependency is unavailable", extra={"error": repr(error)})
    return JSONResponse(
        {"detail": f"unavailable, retry later: {type(error).__name__}: {error}"},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def _not_found(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=404)


#: The dependency giving the app's DeadLetters (set by the lifespan; tests override it).
dead_letters_of = state_of(DeadLetters)
DeadLettersDep = Annotated[DeadLetters, Depends(dead_letters_of)]
router = APIRouter(tags=["dead letters"])


@router.get(
    "/v1/dead-letters/{topic}",
    summary="List a topic's dead letters",
    description=(
        "Dead letters in (partition, offset) order, each with its error, origin and whether "
        "it was redriven. Filters combine. A page holds up to `limit` matches; one request "
        "examines at most 100,000 dead letters, so a page may hold fewer — follow "
        "`next_cursor` until it is null."
    ),
    response_model=DeadLetterPageOut,
    responses={**_ERRORS, **_UNKNOWN_TOPIC},
)
async def list_dead_letters(
    topic: TopicParam,
    _: AdminCaller,
    dead_letters: DeadLettersDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[
        str | None,
        Query(pattern=_CURSOR_PATTERN, description="PARTITION:OFFSET to start from"),
    ] = None,
    partition: Annotated[int | None, Query(ge=0, le=_MAX_PARTITION)] = None,
    error_contains: Annotated[
        str | None,
        Query(min_length=1, max_length=1000, description="Case-insensitive"),
    ] = None,
    error_type: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
    redriven: Annotated[bool | None, Query(description="Only redriven, or only not")] = None,
) -> Any:
    try:
        dlq_topic, origin_topic = resolve_topic(topic)
    except UnknownTopic as error:
        return _not_found(str(error))
    chosen = Filter(error_contains=error_contains, error_type=error_type, partition=partition)
    try:
        page = await dead_letters.page(
            dlq_topic,
            chosen,
            cursor=parse_position(cursor) if cursor else None,
            limit=limit,
            redriven=redriven,
        )
    except _UNAVAILABLE as error:
        return _unavailable(error)
    return DeadLetterPageOut(
        dlq_topic=dlq_topic,
        origin_topic=origin_topic,
        entries=[_summary(entry) for entry in page.entries],
        next_cursor=str(page.next_cursor) if page.next_cursor else None,
        scanned=page.scanned,
    )


@router.get(
    "/v1/dead-letters/{topic}/{partition}/{offset}",
    summary="One dead letter, with all its headers and its value",
    response_model=DeadLetterDetailOut,
    responses={
        **_ERRORS,
        404: answer("Not a topic with dead letters, or no record", Detail),
    },
)
async def show_dead_letter(
    topic: TopicParam,
    partition: PartitionParam,
    offset: OffsetParam,
    _: AdminCaller,
    dead_letters: DeadLettersDep,
) -> Any:
    try:
        dlq_topic, _origin = resolve_topic(topic)
    except UnknownTopic as error:
        return _not_found(str(error))
    position = Position(partition, offset)
    try:
        entry = await dead_letters.show(dlq_topic, position)
    except _UNAVAILABLE as error:
        return _unavailable(error)
    if entry is None:
        return _not_found(f"{dlq_topic} holds no record at {position}")
    text, complete = value_preview(entry.record.value)
    return DeadLetterDetailOut(
        **dict(_summary(entry)),
        headers=entry.record.header_texts(),
        value_preview=text,
        value_bytes=len(entry.record.value or b""),
        value_complete=complete,
    )


@router.post(
    "/v1/dead-letters/{topic}/redrive",
    summary="Re-publish chosen dead letters to their origin topic",
    description=(
        "Each chosen dead letter's original key, value and headers go back to its origin "
        "topic (acks=all) with a `redriven_from` header. A dead letter — or another dead "
        "letter of the same origin record, or of the same item of a batch record — that was "
        "already redriven is skipped, never published twice (the items of one record are "
        "redriven each once); one whose origin is not this topic is refused (failed). "
        "At most 1,000 per request: with `all: true`, follow `next_cursor`."
    ),
    response_model=RedriveOut,
    responses={**_ERRORS, **_UNKNOWN_TOPIC},
    openapi_extra=_REDRIVE_BODY,
)
async def redrive(
    topic: TopicParam,
    caller: AdminCaller,
    body: Annotated[RedriveRequest, Depends(redrive_request)],
    dead_letters: DeadLettersDep,
) -> Any:
    try:
        dlq_topic, origin_topic = resolve_topic(topic)
    except UnknownTopic as error:
        return _not_found(str(error))
    by = caller.name
    next_cursor: Position | None = None
    try:
        if body.records is not None:
            chosen = [Position(r.partition, r.offset) for r in body.records]
            decisions = await dead_letters.redrive(
                dlq_topic, origin_topic, chosen, by=by, dry_run=body.dry_run
            )
        else:
            report = await dead_letters.redrive_matching(
                dlq_topic,
                origin_topic,
                Filter(
                    error_contains=body.error_contains,
                    error_type=body.error_type,
                    partition=body.partition,
                ),
                cursor=parse_position(body.cursor) if body.cursor else None,
                limit=body.limit,
                by=by,
                dry_run=body.dry_run,
            )
            decisions, next_cursor = report.decisions, report.next_cursor
    except _UNAVAILABLE as error:
        return _unavailable(error)
    counts = tally(d.outcome for d in decisions if d.outcome is not None)
    return RedriveOut(
        dlq_topic=dlq_topic,
        origin_topic=origin_topic,
        dry_run=body.dry_run,
        chosen=len(decisions),
        redriven=counts.redriven,
        would_redrive=counts.would_redrive,
        skipped=counts.skipped,
        failed=counts.failed,
        results=[_result(d, origin_topic) for d in decisions],
        next_cursor=str(next_cursor) if next_cursor else None,
    )
