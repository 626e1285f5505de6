"""A note (SPEC §10, §13 "Notes"), decided on data already loaded. Pure.

A reclassification that moved items in a closed, invoiced period owes a note: the period re-rated
now (the version current when the note is issued, every item metered for it, late ones included,
its service credits measured again) minus everything already billed for it — SPEC §6's rule, the
one a late adjustment bills (`rating.adjustment_amount`). Also when that is 0.00. What the note
bills joins the period's billed total, and the late items it moved in or out of classes join what
is settled, so neither a later note nor a later late adjustment bills the same difference again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.billing.close_decision import ClosedPeriod, PeriodCounts
from shared.contracts.reclassification import NOTE_REASON, Note, adjustment_line, note_id
from shared.domain.agreement.agreement import Agreement
from shared.domain.rating import adjustment_amount, rate
from shared.domain.usage import billable_usage


@dataclass(frozen=True)
class NoteDecision:
    note: Note
    k: int
    #: The period's billed total and settled late items once the note is issued.
    billed_total: Decimal
    late_items_settled: int
    #: The service credits inside that billed total (the re-rating's).
    credits: Decimal


@dataclass(frozen=True)
class Owed:
    """A reclassification that moved items in a closed, invoiced period, owed its note."""

    client_id: str
    reclassification: str
    period: str
    reason: str
    #: The late billable items it moved into classes (less those it moved out).
    late_delta: int


def decide_note(
    *,
    due: Owed,
    closed: ClosedPeriod,
    agreement: Agreement,
    ledger: PeriodCounts,
    k: int,
    now: datetime,
) -> NoteDecision:
    """The `k`th note of the period, for `due`. `closed` is the period as billed so far (an
    invoiced period: its billed total is known)."""
    assert closed.invoice_id is not None and closed.billed_total is not None, "an invoiced period"
    rerated = rate(agreement, billable_usage(ledger.counts), ledger.levels)
    amount = adjustment_amount(rerated.total, closed.billed_total, agreement.currency)
    note = Note(
        note_id=note_id(due.client_id, due.period, k),
        client_id=due.client_id,
        invoice_id=closed.invoice_id,
        period=due.period,
        currency=agreement.currency,
        reclassification=due.reclassification,
        reason=NOTE_REASON.format(id=due.reclassification, reason=due.reason),
        lines=(adjustment_line(amount),),
        total=amount,
        issued_at=now,
    )
    return NoteDecision(
        note,
        k,
        closed.billed_total + amount,
        closed.late_items_settled + due.late_delta,
        rerated.credits,
    )
