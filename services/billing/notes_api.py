"""Notes (SPEC §10): `GET /v1/notes?client_id=&period=` and `GET /v1/notes/{note_id}`, for the
admin key or the client's own key (another client's note by id is a 404, as if unknown)."""

from __future__ import annotations

import re
from typing import Annotated, Final

from fastapi import APIRouter, Path

from services.billing.deps import (
    BillingRoute,
    QueryClientId,
    QueryPeriod,
    Service,
    share_methods,
    unknown,
)
from services.billing.openapi import responses
from shared.contracts.reclassification import Note, Notes
from shared.domain.agreement.fields import CLIENT_ID_PATTERN
from shared.infra.http import READERS, ReaderCaller, may_read, scoped_client

#: `<client>-<YYYY-MM>-n<k>` (SPEC §10).
_NOTE_ID: Final = re.compile(rf"{CLIENT_ID_PATTERN}-[0-9]{{4}}-[0-9]{{2}}-n[1-9][0-9]{{0,8}}")

router = APIRouter(route_class=BillingRoute, tags=["alignment"])
NoteIdPath = Annotated[str, Path(json_schema_extra={"maxLength": 128})]


@router.get(
    "/v1/notes",
    summary="Notes issued for reclassifications in closed periods, by client and period",
    description="A client key lists its own client's notes (`client_id` left out or its own).",
    dependencies=READERS,
    responses=responses(422),
)
async def list_notes(
    caller: ReaderCaller, client_id: QueryClientId, period: QueryPeriod, service: Service
) -> Notes:
    client = scoped_client(caller, client_id)
    key = period.key if period is not None else None
    return Notes(notes=tuple(await service.notes(client_id=client, period=key)))


@router.get(
    "/v1/notes/{note_id}",
    summary="One note",
    description="Another client's note is unknown to a client key (404).",
    dependencies=READERS,
    responses=responses(404, 422),
)
async def get_note(caller: ReaderCaller, note_id: NoteIdPath, service: Service) -> Note:
    found = await service.note(note_id) if _NOTE_ID.fullmatch(note_id) else None
    if found is None or not may_read(caller, found.client_id):
        raise unknown("note", note_id)
    return found


share_methods(router)
