"""The console's reads, in one place. It only reads: agreements, invoices and notes are
billing's, the counts are metering's (through shared/ledger/reads.py, as both of them read
them)."""

from __future__ import annotations

import logging
from decimal import Decimal

from services.console.terms_view import BilledPeriod
from shared.contracts.invoice import Invoice
from shared.contracts.reclassification import Note
from shared.domain.agreement.agreement import Agreement
from shared.infra.db import Executor

log = logging.getLogger(__name__)


#: Parsed agreements by (client_id, version): a stored version never changes, so each is read and
#: validated once, not on every poll (4,000 agreements take seconds to validate).
AgreementCache = dict[tuple[str, int], Agreement | None]


async def current_agreements(
    conn: Executor, cache: AgreementCache | None = None
) -> dict[str, Agreement]:
    """The latest version of every client's agreement; only versions not in `cache` are read
    and validated (then added to it)."""
    cache = {} if cache is None else cache
    latest = await conn.fetch(
        """SELECT client_id, max(version) AS version FROM billing.agreements
            GROUP BY client_id"""
    )
    wanted = [(r["client_id"], r["version"]) for r in latest]
    missing = [key for key in wanted if key not in cache]
    if missing:
        rows = await conn.fetch(
            """SELECT a.client_id, a.version, a.body
                 FROM unnest($1::text[], $2::int[]) AS q(client_id, version)
                 JOIN billing.agreements a USING (client_id, version)""",
            [client for client, _ in missing],
            [version for _, version in missing],
        )
        for row in rows:
            key = (row["client_id"], row["version"])
            try:
                cache[key] = Agreement.model_validate(row["body"])
            except ValueError as error:  # one unreadable row must not blank the whole page
                cache[key] = None
                log.warning(
                    "unreadable stored agreement",
                    extra={"client_id": row["client_id"], "error": str(error)},
                )
    current = set(wanted)
    for key in [key for key in cache if key not in current]:
        del cache[key]  # superseded versions
    return {
        client: agreement
        for client, version in wanted
        if (agreement := cache.get((client, version))) is not None
    }


async def recent_invoices(conn: Executor, limit: int) -> list[Invoice]:
    """The last `limit` invoices issued, newest first, read as billing wrote them (SPEC §7)."""
    rows = await conn.fetch(
        """SELECT body FROM billing.invoices
            ORDER BY issued_at DESC, invoice_id DESC LIMIT $1""",
        limit,
    )
    return [Invoice.model_validate(r["body"]) for r in rows]


async def current_agreement(conn: Executor, client_id: str) -> Agreement | None:
    """The client's latest agreement version, or None (none, or a stored body that no longer
    reads as an agreement: the page then shows counts without a tier)."""
    body = await conn.fetchval(
        """SELECT body FROM billing.agreements WHERE client_id = $1
            ORDER BY version DESC LIMIT 1""",
        client_id,
    )
    if body is None:
        return None
    try:
        return Agreement.model_validate(body)
    except ValueError as error:
        log.warning(
            "unreadable stored agreement", extra={"client_id": client_id, "error": str(error)}
        )
        return None


async def client_invoices(conn: Executor, client_id: str, limit: int) -> list[Invoice]:
    """The client's last `limit` invoices, newest period first (SPEC §7, as billing wrote them)."""
    rows = await conn.fetch(
        """SELECT body FROM billing.invoices WHERE client_id = $1
            ORDER BY period DESC, invoice_id DESC LIMIT $2""",
        client_id,
        limit,
    )
    return [Invoice.model_validate(r["body"]) for r in rows]


async def client_notes(conn: Executor, client_id: str, limit: int) -> list[Note]:
    """The client's last `limit` notes (SPEC §10), newest period first, then the latest k."""
    rows = await conn.fetch(
        """SELECT body FROM billing.notes WHERE client_id = $1
            ORDER BY period DESC, k DESC LIMIT $2""",
        client_id,
        limit,
    )
    return [Note.model_validate(r["body"]) for r in rows]


async def billed_periods(
    conn: Executor, client_ids: list[str]
) -> dict[str, dict[str, BilledPeriod]]:
    """Every closed period of these clients (client → period → what was billed for it and the
    service credits inside that, as billing keeps them for the commitment, SPEC §11)."""
    rows = await conn.fetch(
        """SELECT client_id, period, billed_total, credits FROM billing.closed_periods
            WHERE client_id = ANY($1::text[])""",
        client_ids,
    )
    found: dict[str, dict[str, BilledPeriod]] = {client: {} for client in client_ids}
    for row in rows:
        total = row["billed_total"]
        found[row["client_id"]][row["period"]] = BilledPeriod(
            None if total is None else Decimal(total), Decimal(row["credits"])
        )
    return found
