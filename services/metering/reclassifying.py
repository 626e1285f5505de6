"""The reclassification use case (SPEC §10): read → decide (`reclassify.plan`) → write, in one
transaction with the counts, the usage alerts and the audit record.

Idempotent by id: the same id and body again answers the first answer verbatim and moves
nothing; another body is a conflict. In a closed, invoiced period billing owes a note: it is told
at commit, and the answer waits (boundedly) until the note is issued, so a client reading its
notes right after sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.metering import reclassify_store as store
from services.metering.alerts import alerts_between
from services.metering.handlers import Meter
from services.metering.level_alerts import watched
from services.metering.reclassify import Target, answer, plan
from services.metering.store import record_alerts
from shared.contracts.reclassification import ReclassificationAnswer, ReclassificationRequest
from shared.domain.agreement.agreement import Agreement
from shared.domain.periods import Period, period_bounds
from shared.domain.usage import billable_usage
from shared.infra.agreement_view import Agreements
from shared.ledger.reads import note_for

log = logging.getLogger(__name__)

#: How long an answer waits for billing to issue the note a closed period owes.
NOTE_WAIT_SECONDS = 10.0


class Conflict(Exception):
    """The id was used before with another body (SPEC §10: 409)."""


@dataclass(frozen=True)
class Reclassifier:
    pool: asyncpg.Pool
    agreements: Agreements
    meter: Meter
    note_wait_seconds: float = NOTE_WAIT_SECONDS

    async def reclassify(
        self,
        request: ReclassificationRequest,
        body: dict[str, Any],
        *,
        period: Period,
        made_by: str,
        now: datetime,
    ) -> ReclassificationAnswer:
        """Make the reclassification (or answer the first answer again); Conflict when its id
        was used with another body."""
        first = await store.earlier(self.pool, request.client_id, request.id)
        if first is not None:
            return _replay(first, body)
        agreement = self.agreements.get(request.client_id)
        outcome = await self._make(request, body, agreement, period, made_by, now)
        if isinstance(outcome, store.Earlier):
            return _replay(outcome, body)
        done, note_due = outcome
        self.meter.usage_cache.forget(request.client_id, time.monotonic())
        if done.period_status == "open" and done.items and watched(agreement, period):
            # Moved items may now be measured by a level, or no longer: the watch looks again.
            self.meter.level_watch.note([(request.client_id, period)])
        if done.period_status == "open":
            await self.meter.publish_alerts()
        if note_due:
            await self._await_note(request.client_id, request.id)
        return done

    async def _make(
        self,
        request: ReclassificationRequest,
        body: dict[str, Any],
        agreement: Agreement | None,
        period: Period,
        made_by: str,
        now: datetime,
    ) -> tuple[ReclassificationAnswer, bool] | store.Earlier:
        tz = agreement.timezone if agreement is not None else "UTC"
        start, end = period_bounds(period, tz)
        target: Target = request.to if request.to == "rules" else request.to.service_class
        match = request.match
        selection = store.Selection(
            client_id=request.client_id,
            start=start,
            end=end,
            service_line=match.service_line,
            complexity=match.complexity,
            rule_id=match.rule_id,
            classified=None if match.status is None else match.status == "classified",
            item_ids=match.item_ids,
        )
        async with self.pool.acquire() as conn, conn.transaction():
            state = await store.lock(conn, request.client_id, period.key)
            # Under the lock: a concurrent request with the same id has committed or not.
            if (first := await store.earlier(conn, request.client_id, request.id)) is not None:
                return first
            items = await store.matched(conn, selection, with_facts=target == "rules")
            decided = plan(
                items, target=target, reclassification_id=request.id, agreement=agreement
            )
            in_force = agreement is not None and agreement.in_force_for(period)
            watch = not state.closed and in_force and decided.moves
            before = await store.period_counts(conn, request.client_id, start, end) if watch else []
            await store.write(
                conn,
                client_id=request.client_id,
                reclassification_id=request.id,
                reason=request.reason,
                plan=decided,
                at=now,
            )
            if watch and agreement is not None:
                after = await store.period_counts(conn, request.client_id, start, end)
                await record_alerts(
                    conn,
                    alerts_between(
                        agreement, period, billable_usage(before), billable_usage(after), now
                    ),
                )
            done = answer(
                reclassification_id=request.id,
                client_id=request.client_id,
                period=period.key,
                moved=decided.moved,
                closed=state.closed,
            )
            note_due = state.invoiced and bool(decided.moves)
            await store.record(
                conn,
                body=body,
                answer=done,
                made_by=made_by,
                made_at=now,
                note_due=note_due,
                late_delta=decided.late_delta,
            )
        if watch:
            self.meter.alerts_pending = True
        return done, note_due

    async def _await_note(self, client_id: str, reclassification_id: str) -> None:
        deadline = time.monotonic() + self.note_wait_seconds
        delay = 0.02
        while time.monotonic() < deadline:
            if await note_for(self.pool, client_id, reclassification_id) is not None:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        log.warning(
            "billing has not issued the note of a reclassification yet; it follows",
            extra={"client_id": client_id, "reclassification": reclassification_id},
        )


def _replay(first: store.Earlier, body: dict[str, Any]) -> ReclassificationAnswer:
    if first.body != body:
        raise Conflict("this reclassification id was used with another body")
    return ReclassificationAnswer.model_validate(first.answer)
