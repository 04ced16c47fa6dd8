"""What recon's repositories hand the use cases: plain frozen records, never driver rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from meshkit.admin_store import AuditEntry
from recon_svc.domain import EntryView, OrderView, PayoutView
from recon_svc.sums import Settled, Sums


@dataclass(frozen=True)
class Position:
    feed: str
    cursor: str
    applied: int
    updated_at: datetime


@dataclass(frozen=True)
class DueCheck:
    order_id: str
    gen: int
    confirming: bool


@dataclass(frozen=True)
class Recheck:
    """A check that stays queued until `due_at` instead of being dropped; `confirming` when
    that look is the second one that confirms a finding."""

    due_at: datetime
    confirming: bool


@dataclass(frozen=True)
class OrderFacts:
    order_id: str
    order: OrderView | None
    created_at: datetime | None
    terminal_seen: datetime | None   # when recon applied the order's final transition
    entries: list[EntryView]
    payouts: list[PayoutView]
    judged: bool = False              # it has a near-real-time verdict
    settled: Settled | None = None    # its share of the settled sums (latest verdict ok)


@dataclass(frozen=True)
class Verdict:
    """A near-real-time verdict on one order and its share of the settled sums (None
    unless the verdict is ok)."""

    verdict: str
    settled: Settled | None


@dataclass(frozen=True)
class UnbalancedAccount:
    """An account whose credits - debits + refunds is not its latest balance."""

    uid: int
    credits: int
    debits: int
    refunds: int
    balance: int
    last_entry_id: int = 0


@dataclass(frozen=True)
class StuckOrder:
    order_id: str
    uid: int
    state: str
    created_at: datetime


@dataclass(frozen=True)
class SelfCheckLease:
    """Orders leased for a self-check; `until` is their new due time (and the lease's key)."""

    orders: list[OrderView]
    until: datetime


@dataclass(frozen=True)
class RecountedSums:
    """The running sums and the same sums recounted from the projections, one snapshot."""

    running: Sums
    recount: Sums


@dataclass(frozen=True)
class DailyGroup:
    """The day's orders of one state and channel: counts and sums, and the ids of those not
    plainly clean (every order with a finding is among them)."""

    state: str
    channel: str
    orders: int
    amount_fen: int
    debit_fen: int
    refund_fen: int
    paid_fen: int
    suspects: list[str]


@dataclass(frozen=True)
class LedgerDay:
    """Ledger sums of one day's entries."""

    entries: int
    credits: int
    debits: int
    refunds: int
    voids: int


@dataclass(frozen=True)
class AuditPage:
    """A page of the admin audit, newest first; `next_page_token` is empty on the last."""

    entries: list[AuditEntry]
    next_page_token: str


@dataclass(frozen=True)
class StoredReport:
    date: date
    orders: int
    discrepancies: int
    report_json: str
    text: str
    created_at: datetime
