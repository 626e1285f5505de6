"""The console's reads, in one place. It only reads: agreements and invoices are billing's,
the counts are metering's (through shared/ledger.py, as both of them read them)."""

from __future__ import annotations

import logging
from typing import Any

from shared.agreements import Agreement
from shared.db import Executor

log = logging.getLogger(__name__)


async def current_agreements(conn: Executor) -> dict[str, Agreement]:
    """The latest version of every client's agreement."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (client_id) client_id, body FROM billing.agreements
            ORDER BY client_id, version DESC"""
    )
    agreements: dict[str, Agreement] = {}
    for row in rows:
        try:
            agreements[row["client_id"]] = Agreement.model_validate(row["body"])
        except ValueError as error:  # one unreadable row must not blank the whole page
            log.warning(
                "unreadable stored agreement",
                extra={"client_id": row["client_id"], "error": str(error)},
            )
    return agreements


async def recent_invoices(conn: Executor, limit: int) -> list[dict[str, Any]]:
    """The last `limit` invoices issued, newest first (the §7 invoice bodies)."""
    rows = await conn.fetch(
        """SELECT body FROM billing.invoices
            ORDER BY issued_at DESC, invoice_id DESC LIMIT $1""",
        limit,
    )
    return [r["body"] for r in rows]
