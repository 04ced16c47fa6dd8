"""What recon's use cases depend on: the peers' query RPCs (peers.py implements them over
gRPC; tests use fakes; an order the gateway has no payout for is absent / None), and recon's
own store, written through a unit of work (store/ implements it over PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from recon_svc.domain import (
    Discrepancy,
    EntryChange,
    EntryView,
    NewDiscrepancy,
    OrderChange,
    OrderView,
    PayoutChange,
    PayoutView,
)
from recon_svc.records import (
    AuditPage,
    DailyGroup,
    DueCheck,
    LedgerDay,
    OrderFacts,
    Position,
    Recheck,
    RecountedSums,
    SelfCheckLease,
    StoredReport,
    StuckOrder,
    UnbalancedAccount,
    Verdict,
)
from recon_svc.sums import Moves, Sums


class JobLock(Protocol):
    """One holder across replicas (meshkit.leader.Lease): yields whether this caller holds it."""

    def try_hold(self) -> AbstractAsyncContextManager[bool]: ...


class LedgerPort(Protocol):
    """account_svc: the entries of orders."""

    async def order_entries(self, order_id: str) -> list[EntryView]: ...

    async def orders_entries(self, order_ids: list[str]) -> dict[str, list[EntryView]]: ...


class GatewayPort(Protocol):
    """The gateway: the payouts of orders."""

    async def query_payout(self, order_id: str) -> PayoutView | None: ...

    async def query_payouts(self, order_ids: list[str]) -> dict[str, PayoutView]: ...


class OrdersPort(Protocol):
    """withdraw_svc: an order and when it last changed state."""

    async def get_order(self, order_id: str) -> tuple[OrderView, datetime | None] | None: ...


# ---- recon's own store (store/ implements them over PostgreSQL) ----


class FeedsPort(Protocol):
    async def ensure(self, feeds: Sequence[str]) -> None: ...

    async def positions(self) -> list[Position]: ...

    async def cursor_of(self, feed: str) -> str: ...

    async def lock_at(self, feed: str, cursor: str) -> bool: ...

    async def advance(self, feed: str, to_cursor: str, applied: int, now: datetime) -> None: ...


class PagesPort(Protocol):
    async def apply(self, orders: Sequence[tuple[OrderChange, str]], entries: Sequence[EntryChange],
                    payouts: Sequence[PayoutChange], *, now: datetime, due_at: datetime) -> Moves: ...


class ChecksPort(Protocol):
    async def take_due(self, horizon: datetime, limit: int) -> list[DueCheck]: ...

    async def next_due(self) -> datetime | None: ...

    async def pending(self) -> int: ...

    async def facts(self, order_ids: Sequence[str]) -> dict[str, OrderFacts]: ...

    async def finish(self, done: Sequence[DueCheck], verdicts: dict[str, Verdict], now: datetime,
                     self_check: bool, rechecks: dict[str, Recheck]) -> None: ...


class SelfChecksPort(Protocol):
    async def claim(self, now: datetime, lease_s: float, limit: int) -> SelfCheckLease: ...

    async def finish(self, order_ids: Sequence[str], lease: datetime, now: datetime,
                     retry_at: datetime | None) -> None: ...


class DiscrepanciesPort(Protocol):
    async def record(self, found: Sequence[NewDiscrepancy]) -> list[Discrepancy]: ...

    async def find(self, status: str, reason: str, order_id: str, source: str, limit: int,
                   before: int | None) -> list[Discrepancy]: ...

    async def open_count(self) -> int: ...

    async def resolve(self, discrepancy_id: int, status: str, note: str,
                      actor: str) -> Discrepancy | None: ...

    async def admin_audit(self, page_size: int, page_token: str) -> AuditPage: ...


class AuditsPort(Protocol):
    async def flag_stuck(self, created_before: datetime, limit: int) -> list[StuckOrder]: ...

    async def unbalanced_accounts(self, settled_before: datetime,
                                  limit: int = 1000) -> list[UnbalancedAccount]: ...


class SumsPort(Protocol):
    async def add(self, moves: Moves) -> None: ...

    async def current(self) -> Sums: ...


class DailyPort(Protocol):
    async def orders(self, start: datetime, end: datetime, stuck_before: datetime) -> list[DailyGroup]: ...

    async def orphans(self, start: datetime, end: datetime, applied_before: datetime) -> list[str]: ...

    async def ledger(self, start: datetime, end: datetime) -> LedgerDay: ...

    async def unbalanced_accounts(self, start: datetime, end: datetime) -> list[UnbalancedAccount]: ...

    async def save_report(self, day: date, orders: int, discrepancies: int, report: dict[str, Any],
                          text: str) -> StoredReport: ...

    async def report(self, day: date) -> StoredReport | None: ...


@dataclass(frozen=True)
class Repositories:
    """recon's repositories on one database session. From `ReconStore.autocommit` each
    statement commits on its own: reads, and writes that are one statement."""

    feeds: FeedsPort
    checks: ChecksPort
    self_checks: SelfChecksPort
    discrepancies: DiscrepanciesPort
    audits: AuditsPort
    sums: SumsPort
    daily: DailyPort


@dataclass(frozen=True)
class Transaction(Repositories):
    """The repositories of one unit of work: everything commits together or not at all."""

    pages: PagesPort


class ReconStore(Protocol):
    @property
    def autocommit(self) -> Repositories: ...

    def unit_of_work(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def sums_with_recount(self) -> RecountedSums:
        """The running sums and a full recount of them, in one snapshot (scans every table)."""
        ...
