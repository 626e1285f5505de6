"""The service-level watch (SPEC §11, issue 13): every few seconds, the open periods that counted
items since the last pass are checked against their service levels, and a level missed so far
is warned of on `usage.alerts`, once per client, period and level.

A pass reads → decides purely (`level_alerts`) → writes: the watched periods (taken from the
`WatchList` the counting fills), of clients whose current agreement has service levels and bills
the period → the closed periods of those clients (left out) → the levels already warned of → per
period its level counts (one ledger read; none when every level was warned of already) → the
misses not warned of yet → the usage of the periods with one (one round trip, for the tier fee
the credit at stake is a share of) → the warnings → recorded in the alerts' outbox in one
statement, then published with the threshold alerts. The counting's own transaction is
untouched: it only notes its periods.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from services.metering import store
from services.metering.alerts import AlertRow, UsageKey
from services.metering.level_alerts import (
    WatchedPeriod,
    WatchList,
    unwarned_misses,
    warnings,
    watched,
)
from shared.domain.agreement.agreement import Agreement
from shared.domain.attainment import LevelResult, assess
from shared.domain.periods import Period, period_bounds
from shared.infra.agreement_view import Agreements
from shared.infra.db import Connection, caused_by_data
from shared.ledger.reads import closed_periods
from shared.ledger.service_levels import level_counts

log = logging.getLogger(__name__)


class AlertOutbox(Protocol):
    """What publishes the recorded alerts (`handlers.Meter`)."""

    alerts_pending: bool

    async def publish_alerts(self) -> None: ...


@dataclass(frozen=True)
class Missed:
    """A watched period with levels missed and not warned of yet."""

    agreement: Agreement
    period: Period
    misses: list[LevelResult]

    @property
    def key(self) -> UsageKey:
        return UsageKey(self.agreement.client_id, self.period, self.agreement.timezone)


@dataclass(frozen=True)
class ServiceLevelWatcher:
    pool: asyncpg.Pool
    agreements: Agreements
    watch: WatchList
    outbox: AlertOutbox

    async def run(self, every: float) -> None:
        """A pass every `every` seconds until cancelled; a failed pass is logged and its periods
        are checked again by the next."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.watch_once(datetime.now(UTC))
            except Exception as error:  # the watch must never die: the next pass retries
                log.warning("service-level watch failed; will retry", extra={"error": repr(error)})

    async def watch_once(self, now: datetime) -> list[AlertRow]:
        """One pass over the periods noted since the last: the warnings it recorded (and then
        published). If it fails, the periods it took are noted again."""
        due = self.watch.take()
        try:
            recorded = await self._check(due, now)
        except BaseException:  # an outage, a bug or the stop: nothing was recorded
            self.watch.note(due)
            raise
        for row in recorded:
            data = row.body["data"]
            assert isinstance(data, dict)
            log.warning(
                "a service level is below its target mid-period",
                extra={
                    name: data[name]
                    for name in (
                        "client_id",
                        "period",
                        "service_level",
                        "measured",
                        "met",
                        "attainment_percent",
                        "target_percent",
                        "credit_at_stake",
                        "currency",
                    )
                },
            )
        if recorded:
            self.outbox.alerts_pending = True
            await self.outbox.publish_alerts()
        return recorded

    async def _check(self, due: set[WatchedPeriod], now: datetime) -> list[AlertRow]:
        current = {client: self.agreements.get(client) for client in {c for c, _ in due}}
        periods = [
            (agreement, period)
            for client, period in sorted(due)
            if watched(agreement := current[client], period) and agreement is not None
        ]
        if not periods:
            return []
        async with self.pool.acquire() as conn:
            clients = sorted({agreement.client_id for agreement, _ in periods})
            closed = await closed_periods(conn, clients)
            periods = [(a, p) for a, p in periods if (a.client_id, p.key) not in closed]
            warned = await store.warned_levels(conn, [(a.client_id, p.key) for a, p in periods])
            missed: list[Missed] = []
            for agreement, period in periods:
                found = await _missed(
                    conn, agreement, period, warned[(agreement.client_id, period.key)]
                )
                if found is not None:
                    missed.append(found)
            usage = await store.load_usage(conn, [m.key for m in missed])
            rows: list[AlertRow] = []
            for m in missed:
                try:
                    rows += warnings(m.agreement, m.period, m.misses, usage[m.key], now)
                except Exception as error:  # whatever the agreement holds: skip this one
                    _skipped(m.agreement, m.period, error)
            await store.record_alerts(conn, rows)
        return rows


async def _missed(
    conn: Connection, agreement: Agreement, period: Period, warned: set[str]
) -> Missed | None:
    """The period's levels missed so far and not warned of yet (None: none), from its level
    counts; not read at all when every level was warned of already."""
    terms = agreement.service_levels
    assert terms is not None, "only periods of agreements with service levels are watched"
    if {level.id for level in terms.levels} <= warned:
        return None
    try:
        counts = await level_counts(conn, agreement, *period_bounds(period, agreement.timezone))
        assert counts is not None
        misses = unwarned_misses(assess(terms, counts), warned)
    except Exception as error:
        if not caused_by_data(error):
            raise  # an outage or a bug: the pass fails and its periods are checked again
        _skipped(agreement, period, error)
        return None
    return Missed(agreement, period, misses) if misses else None


def _skipped(agreement: Agreement, period: Period, error: Exception) -> None:
    log.error(
        "service-level warnings could not be worked out; skipped",
        exc_info=error,
        extra={"client_id": agreement.client_id, "period": period.key},
    )
