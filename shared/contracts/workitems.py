"""The wire contracts: topic names and the messages that travel between the services.

Every service meets the others only here and on Kafka. The intake contract (`WorkItem`) is
SPEC §2 to the letter: strict types (no coercion), `null` is not a value, unknown fields are
rejected. Downstream messages extend it, so an item carries everything upstream said about it
plus what each stage decided.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Generic, TypeVar

import msgspec
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from shared.domain.agreement.fields import CLIENT_ID_PATTERN, Complexity, ServiceLine, is_client_id

# --- the work item (SPEC §2) ------------------------------------------------------------------

# RFC 3339 date-time with a mandatory offset; fractional seconds optional.
RFC3339_PATTERN: Final = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
_RFC3339 = re.compile(RFC3339_PATTERN)
MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
#: SPEC §2/§13: times lie in these years, both as written and in UTC.
FIRST_YEAR: Final = 2000
LAST_YEAR: Final = 2099
#: SPEC §2: integers of attributes within ±2^53, inclusive (what every JSON reader keeps exact).
#: Held for every attribute number: a float beyond it has no fraction, so it is an integer too
#: (as JSON Schema counts), just written another way (`1e300`, `9007199254740993.0`).
MAX_SAFE_INTEGER: Final = 2**53
MAX_ATTRIBUTE_TEXT: Final = 1_000
#: The largest encoded record the pipeline carries. The local broker takes Kafka's default
#: message.max.bytes (1,048,588 bytes, record overhead included); the classifier adds its
#: outcome (service line, complexity, a rule id of at most 200 characters, the agreement version)
#: to a `workitems.completed` record. Intake refuses (413) an item whose completed record is over
#: this, and any stage may refuse an output over it, so nothing is discovered too late at the
#: broker. SPEC §2's bounds already keep every item far below it (about 620 KB at worst).
MAX_RECORD_BYTES: Final = 1_000_000


def text_problem(value: str) -> str | None:
    """Why `value` is not text SPEC §13 accepts (U+0000, a lone surrogate), or None."""
    if "\x00" in value:
        return "must not contain U+0000"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "must be valid Unicode (a lone surrogate is not)"
    return None


def _valid_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def time_problem(value: datetime) -> str | None:
    """Why an aware time is outside SPEC §13's years (as written or in UTC), or None."""
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        return f"must lie in the years {FIRST_YEAR}..{LAST_YEAR}"
    if value.year in (FIRST_YEAR, LAST_YEAR) and not (
        FIRST_YEAR <= value.astimezone(UTC).year <= LAST_YEAR
    ):
        return f"must lie in the years {FIRST_YEAR}..{LAST_YEAR} also in UTC"
    return None


_TEXT = AfterValidator(_valid_text)
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=128), _TEXT]
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=64), _TEXT]
Queue = Annotated[str, StringConstraints(max_length=200), _TEXT]
Title = Annotated[str, StringConstraints(max_length=500), _TEXT]
Tag = Annotated[str, StringConstraints(max_length=64), _TEXT]
AttributeKey = Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_TEXT), _TEXT]


def _attribute_value(value: Any) -> bool | int | float | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a number must be finite")
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError("a number (an integer) must lie within ±2^53")
        return value
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            raise ValueError(f"a string must have at most {MAX_ATTRIBUTE_TEXT} characters")
        return _valid_text(value)
    raise ValueError("must be a string, a number or a boolean")


AttributeValue = Annotated[bool | int | float | str, PlainValidator(_attribute_value)]

_OPTIONAL_FIELDS = (
    "queue",
    "title",
    "tags",
    "units",
    "handling_seconds",
    "attributes",
    "opened_at",
)


class WorkItem(BaseModel):
    """A completed unit of back-office work, as a ticketing system reports it."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    id: ItemId
    client_id: ClientId
    source: SourceName
    completed_at: AwareDatetime
    queue: Queue | None = None
    title: Title | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    units: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    handling_seconds: Annotated[int, Field(ge=0, le=604_800)] | None = None
    attributes: Annotated[dict[AttributeKey, AttributeValue], Field(max_length=50)] | None = None
    opened_at: AwareDatetime | None = None

    @field_validator(*_OPTIONAL_FIELDS, mode="before")
    @classmethod
    def _null_is_not_a_value(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value: leave the field out")
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id_shape(cls, value: str) -> str:
        if not is_client_id(value):
            raise ValueError(f"must match {CLIENT_ID_PATTERN}")
        return value

    @field_validator("completed_at", "opened_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        # Parsed here because pydantic alone also takes dates, naive times and epoch numbers.
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not _RFC3339.fullmatch(value):
            raise ValueError(
                "must be an RFC 3339 timestamp string with an offset, e.g. 2026-10-01T09:30:00Z"
            )
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("is not a valid date and time") from None

    @field_validator("completed_at")
    @classmethod
    def _in_range(cls, value: datetime, info: ValidationInfo) -> datetime:
        problem = time_problem(value)
        if problem is not None:
            raise ValueError(problem)
        # Only at the edge: intake passes the receive time; later stages re-read old items.
        received_at = info.context.get("received_at") if info.context else None
        if received_at is not None and value > received_at + MAX_FUTURE_SKEW:
            raise ValueError("is more than 5 minutes in the future")
        return value

    @field_validator("opened_at")
    @classmethod
    def _opened_in_range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        problem = time_problem(value)
        if problem is not None:
            raise ValueError(problem)
        completed_at = info.data.get("completed_at")
        if completed_at is not None and value > completed_at:
            raise ValueError("must not be after completed_at")
        return value


# --- what travels between the services ------------------------------------------------------
#
# Intake writes only items `WorkItem` accepted, so downstream a message is checked against the
# same shapes and bounds, but with msgspec rather than pydantic: decoding one of these costs about
# 2 µs against pydantic's 20, and the pipeline decodes every item twice. `null` is accepted here
# (intake never writes it); unknown fields are not. A message that does not decode is a
# `ContractError` naming the field, and goes to the topic's dead-letter topic.

Instant = Annotated[datetime, msgspec.Meta(tz=True)]
SafeInt = Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
SafeFloat = Annotated[float, msgspec.Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
AttributeText = Annotated[str, msgspec.Meta(max_length=MAX_ATTRIBUTE_TEXT)]
Tags = Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=50)]
Attributes = Annotated[
    dict[AttributeText, bool | SafeInt | SafeFloat | AttributeText], msgspec.Meta(max_length=50)
]
#: A rule id: an agreement rule's own id, `default`, `builtin:<line>` or `reclassification:<id>`.
MAX_RULE_ID: Final = 200
RuleId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_RULE_ID)]
#: Agreement versions are PostgreSQL `integer`s.
AgreementVersion = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class CompletedWorkItem(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A work item intake accepted: what `workitems.completed` carries (SPEC §2's fields, plus
    when intake received it and the source system whose intake key sent it).

    Decoding holds every bound `WorkItem` holds and everything metering needs to store it: a
    poison record written straight to Kafka is a `ContractError`, never a database error."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    client_id: Annotated[str, msgspec.Meta(pattern=f"^{CLIENT_ID_PATTERN}$")]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    completed_at: Instant
    received_at: Instant
    key_source: Annotated[str, msgspec.Meta(max_length=200)]
    queue: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    title: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    tags: Tags | None = None
    units: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    handling_seconds: Annotated[int, msgspec.Meta(ge=0, le=604_800)] | None = None
    attributes: Attributes | None = None
    opened_at: Instant | None = None


class ClassifiedWorkItem(CompletedWorkItem, frozen=True):
    """An item after classification; `service_line` is None for an unclassified item."""

    service_line: ServiceLine | None = None
    complexity: Complexity | None = None
    rule_id: RuleId | None = None
    agreement_version: AgreementVersion | None = None

    def __post_init__(self) -> None:
        if (self.service_line is None) != (self.complexity is None):
            raise ValueError("service_line and complexity are set together or not at all")

    @property
    def classified(self) -> bool:
        return self.service_line is not None


class ContractError(ValueError):
    """A message that is not the record its topic carries."""


_T = TypeVar("_T", bound=CompletedWorkItem)
#: Called with the completed item's fields as a tuple, which mypy cannot match to parameters.
_CLASSIFIED_TYPE: Callable[..., ClassifiedWorkItem] = ClassifiedWorkItem
_COMPLETED = msgspec.json.Decoder(CompletedWorkItem)
_CLASSIFIED = msgspec.json.Decoder(ClassifiedWorkItem)


def decode_completed(value: bytes | None) -> CompletedWorkItem:
    return _decode(_COMPLETED, value, "CompletedWorkItem")


def decode_classified(value: bytes | None) -> ClassifiedWorkItem:
    return _decode(_CLASSIFIED, value, "ClassifiedWorkItem")


def _decode(decoder: msgspec.json.Decoder[_T], value: bytes | None, name: str) -> _T:
    raw = value or b""
    record: _T = _parse(decoder, raw, name)
    _check(record, name)
    if b"\\" in raw and b"\\u0000" in raw:  # one memchr for the records without escapes
        _check_nul(record, name)
    return record


def _parse(decoder: msgspec.json.Decoder[Any], raw: bytes, name: str) -> Any:
    try:
        return decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ContractError(f"not a valid {name}: {error}") from None
    except UnicodeDecodeError as error:  # msgspec reads strings as UTF-8 without checking first
        raise ContractError(f"not a valid {name}: invalid UTF-8 ({error.reason})") from None
    except RecursionError:
        raise ContractError(f"not a valid {name}: JSON nested too deeply") from None


def _check_nul(record: msgspec.Struct, name: str) -> None:
    where = _nul_in(record)
    if where is not None:
        raise ContractError(f"not a valid {name}: U+0000 in `{where}`")


def _check(record: CompletedWorkItem, name: str) -> None:
    # Checked here rather than in a __post_init__, which costs a Python call per record: the
    # years only when a time is near an edge, U+0000 only when the bytes hold its escape (msgspec
    # refuses lone surrogates and raw control characters itself, and writes U+0000 only so).
    opened_at = record.opened_at
    if not (
        FIRST_YEAR < record.completed_at.year < LAST_YEAR
        and FIRST_YEAR < record.received_at.year < LAST_YEAR
        and (opened_at is None or FIRST_YEAR < opened_at.year < LAST_YEAR)
    ):
        for field in ("completed_at", "received_at", "opened_at"):
            when: datetime | None = getattr(record, field)
            problem = None if when is None else time_problem(when)
            if problem is not None:
                raise ContractError(f"not a valid {name}: `{field}` {problem}")
    if opened_at is not None and opened_at > record.completed_at:
        raise ContractError(f"not a valid {name}: `opened_at` must not be after completed_at")


def _nul_in(record: msgspec.Struct) -> str | None:
    """The first field of a decoded record holding a string with U+0000 (key or value)."""
    name: str
    for name in record.__struct_fields__:
        value = getattr(record, name)
        if isinstance(value, str):
            if "\x00" in value:
                return name
        elif isinstance(value, list):
            if any("\x00" in tag for tag in value):
                return name
        elif isinstance(value, dict) and any(
            "\x00" in key or (isinstance(text, str) and "\x00" in text)
            for key, text in value.items()
        ):
            return name
    return None


def with_outcome(
    item: CompletedWorkItem,
    *,
    service_line: str | None,
    complexity: str | None,
    rule_id: str | None,
    agreement_version: int | None,
) -> ClassifiedWorkItem:
    """`item` as the classifier publishes it: with its class (None when unclassified), the rule
    that placed it and the agreement version the rules came from."""
    fields: tuple[Any, ...] = msgspec.structs.astuple(item)  # positional: the cheap way
    return _CLASSIFIED_TYPE(
        *fields,
        service_line=service_line,
        complexity=complexity,
        rule_id=rule_id,
        agreement_version=agreement_version,
    )


encode_record = msgspec.json.Encoder().encode


# --- records: one item, or a batch of one client's items ------------------------------------
#
# A record on `workitems.completed` or `workitems.classified` holds one item document (a JSON
# object) or a batch: a JSON array of item documents, all of the record key's client, in the
# order they were accepted. Intake and the classifier write batches, so Kafka's and the
# consumers' per-record costs (framing, fetching, offsets, FastStream's bookkeeping) are paid
# once per batch rather than once per item. Every guarantee stays per item: each item of a batch
# is classified and counted on its own, and one that breaks the contract is dead-lettered alone
# (its own document as the dead letter's value, its index in the `origin_item` header) while the
# rest of its batch goes on. Anyone may still write single items.

_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])


def is_batch(value: bytes) -> bool:
    """Whether a record's value is a batch (a JSON array) rather than one item."""
    head = value[:1]
    if head in b" \t\r\n" and head:
        head = value.lstrip()[:1]
    return head == b"["


def pack_records(values: Sequence[bytes], *, limit: int = MAX_RECORD_BYTES) -> list[bytes]:
    """Encoded item documents (each at most `limit` bytes) as the fewest records of at most
    `limit` bytes each, in order: a lone item as itself, several as a JSON array."""
    records: list[bytes] = []
    start, size = 0, 1  # the batch being filled: values[start:end], its "[" counted
    for end, value in enumerate(values):
        if end > start and size + len(value) + 1 > limit:
            records.append(_joined(values[start:end]))
            start, size = end, 1
        size += len(value) + 1  # the value and its "," (or the closing "]")
    if start < len(values):
        records.append(_joined(values[start:]))
    return records


def _joined(values: Sequence[bytes]) -> bytes:
    return values[0] if len(values) == 1 else b"[" + b",".join(values) + b"]"


def batch_element(value: bytes, index: int) -> bytes:
    """The document of item `index` of a batch record, byte for byte (for its dead letter)."""
    return bytes(_ELEMENTS.decode(value)[index])


class ItemRecords(Generic[_T]):
    """Decodes the items of a record of one item type, a lone item or a batch (see above)."""

    def __init__(self, item_type: type[_T]) -> None:
        self.name = item_type.__name__
        self._one: msgspec.json.Decoder[_T] = msgspec.json.Decoder(item_type)
        self._many: msgspec.json.Decoder[list[_T]] = msgspec.json.Decoder(list[item_type])  # type: ignore[valid-type]

    def decode(self, value: bytes | None) -> list[_T]:
        """Every item of the record, or ContractError if any item breaks the contract (then
        `decode_each` tells which)."""
        raw = value or b""
        items: list[_T]
        head = raw[:1]
        if head == b"[" or (head != b"{" and is_batch(raw)):
            items = _parse(self._many, raw, f"batch of {self.name}")
        else:
            items = [_parse(self._one, raw, self.name)]
        for item in items:  # `_check`, its usual outcome decided inline (a call per item)
            if item.opened_at is not None or not (
                FIRST_YEAR < item.completed_at.year < LAST_YEAR
                and FIRST_YEAR < item.received_at.year < LAST_YEAR
            ):
                _check(item, self.name)
        if b"\\" in raw and b"\\u0000" in raw:
            for item in items:
                _check_nul(item, self.name)
        return items

    def decode_each(self, value: bytes) -> list[_T | ContractError]:
        """Each item of a batch record decoded on its own: the item, or why it breaks the
        contract. ContractError if the record is not a JSON array at all."""
        try:
            elements = _ELEMENTS.decode(value)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise ContractError(f"not a valid batch of {self.name}: not a JSON array") from None
        decoded: list[_T | ContractError] = []
        for element in elements:
            try:
                decoded.append(_decode(self._one, bytes(element), self.name))
            except ContractError as error:
                decoded.append(error)
        return decoded


COMPLETED_RECORDS: Final = ItemRecords(CompletedWorkItem)
CLASSIFIED_RECORDS: Final = ItemRecords(ClassifiedWorkItem)
