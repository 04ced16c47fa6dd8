"""Use cases of reconciliation: apply feed pages, judge settled orders (near-real-time and
self-check), scan for stuck orders and broken totals, and answer the admin RPCs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from meshkit import paging, validate
from meshkit.errors import Unavailable
from meshkit.telemetry import meter
from meshkit.timeconv import utcnow
from recon_svc.alerts import Alerts
from recon_svc.domain import (
    Discrepancy,
    DiscrepancyNotFound,
    EntryChange,
    Finding,
    NewDiscrepancy,
    OrderChange,
    OrderNotFound,
    PayoutChange,
    Reason,
    Source,
    check_order,
    entry_change,
    held_back,
    latest_per_order,
    ledger_conservation,
    order_change,
    page_size,
    payout_change,
    validate_filters,
    validate_order_id,
    validate_resolution,
)
from recon_svc.peers import FeedChange
from recon_svc.ports import GatewayPort, LedgerPort, OrdersPort, ReconStore
from recon_svc.records import AuditPage, OrderFacts, Position, Recheck, Verdict
from recon_svc.settings import Settings
from recon_svc.sums import Moves, Sums, differences, settled_mismatch, settled_share, verdict_moves

log = logging.getLogger(__name__)
# Orders whose self-check is done; benches wait on it to know recon has finished a run.
_self_checked = meter("recon_svc").create_counter(
    "recon.self_checked.orders", description="settled orders checked against the ledger and the gateway")


class FeedHeads:
    """When each followed feed was last read to its end (the start time of that read):
    what the peer committed before then is in the projections, except changes the feed still
    holds back because an older transaction of its database was running (the confirming
    second look covers those). The checker judges an order only once every feed was read
    past its due time, so a stalled follower delays verdicts instead of producing false ones."""

    def __init__(self, feeds: Sequence[str]) -> None:
        self._heads: dict[str, datetime | None] = {f: None for f in feeds}

    def reached(self, feed: str, at: datetime) -> None:
        self._heads[feed] = at

    def horizon(self) -> datetime | None:
        if not self._heads:
            return utcnow()
        values = list(self._heads.values())
        if any(v is None for v in values):
            return None
        return min(v for v in values if v is not None)

    def of(self, feed: str) -> datetime | None:
        return self._heads.get(feed)


@dataclass(frozen=True)
class Status:
    positions: list[Position]
    heads: dict[str, datetime | None]
    pending_checks: int
    open_discrepancies: int
    sums: Sums


@dataclass
class _Judged:
    """What one batch of checks comes to, written in the batch's unit of work."""

    found: list[NewDiscrepancy] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    rechecks: dict[str, Recheck] = field(default_factory=dict)
    moves: Moves = field(default_factory=Moves)


class ReconService:
    def __init__(
        self,
        store: ReconStore,
        settings: Settings,
        alerts: Alerts,
        ledger: LedgerPort,
        gateway: GatewayPort,
        orders: OrdersPort,
    ) -> None:
        self.store = store
        self.settings = settings
        self.alerts = alerts
        self.ledger = ledger
        self.gateway = gateway
        self.orders = orders
        self.heads = FeedHeads([name for name, _ in settings.feeds])
        self.grace = timedelta(seconds=settings.grace_s)
        self.refund_grace = timedelta(seconds=settings.refund_grace_s)
        # Accounts seen not adding up: uid -> (first seen, last entry id then).
        self._unbalanced: dict[int, tuple[datetime, int]] = {}
        # Set when this process queued checks (a feed page) or self-checks (verdicts), so
        # that idle loops wake up at once instead of at their next poll.
        self.checks_queued = asyncio.Event()
        self.self_checks_queued = asyncio.Event()
        # Set when a check is due but some feed has not been read past it: that feed's
        # follower, however idle, reads it now.
        self.feed_wanted = {name: asyncio.Event() for name, _ in settings.feeds}

    # ---- feeds ----

    async def ensure_feeds(self) -> None:
        await self.store.autocommit.feeds.ensure([name for name, _ in self.settings.feeds])

    async def cursor_of(self, feed: str) -> str:
        return await self.store.autocommit.feeds.cursor_of(feed)

    async def apply_page(self, feed: str, from_cursor: str, changes: Sequence[FeedChange],
                         next_cursor: str) -> bool:
        orders: list[OrderChange] = []
        entries: list[EntryChange] = []
        payouts: list[PayoutChange] = []
        for c in changes:
            if c.kind == "order":
                if (o := order_change(c.key, c.payload, c.created_at)) is not None:
                    orders.append(o)
            elif c.kind == "entry":
                if (e := entry_change(c.payload, c.created_at)) is not None:
                    entries.append(e)
            elif c.kind == "payout":
                # Keyed by feed and cursor: every payout change is kept once, whichever feed.
                if (p := payout_change(f"{feed}/{c.cursor}", c.key, c.payload, c.created_at)) is not None:
                    payouts.append(p)
        now = utcnow()
        # Sorted by key so that concurrent writers lock rows in one order (no deadlocks).
        latest = sorted(latest_per_order(orders), key=lambda oc: oc[0].order_id)
        # The page, its running sums and the cursor commit together: a crash replays at most
        # this page, and a replica that applied it first makes this one change nothing.
        async with self.store.unit_of_work() as tx:
            if not await tx.feeds.lock_at(feed, from_cursor):
                return False
            moves = await tx.pages.apply(latest, sorted(entries, key=lambda e: e.entry_id), payouts,
                                         now=now, due_at=now + self.grace)
            await tx.feeds.advance(feed, next_cursor, len(latest) + len(entries) + len(payouts), now)
            await tx.sums.add(moves)
        return True

    # ---- near-real-time verdicts ----

    async def run_checks(self) -> tuple[int, datetime | None]:
        """Judge the orders whose grace window passed; returns how many were taken and, when
        none was due, when the next check is (None: none queued)."""
        horizon = self.heads.horizon()
        if horizon is None:
            return 0, None
        now = utcnow()
        horizon = min(horizon, now)
        async with self.store.unit_of_work() as tx:
            due = await tx.checks.take_due(horizon, self.settings.check_batch)
            if not due:
                return 0, await tx.checks.next_due()
            facts = await tx.checks.facts([d.order_id for d in due])
            judged = _Judged()
            for d in due:
                self._judge(facts[d.order_id], d.confirming, now, judged)
            new = await tx.discrepancies.record(judged.found)
            await tx.checks.finish(due, judged.verdicts, now, self.settings.self_check, judged.rechecks)
            await tx.sums.add(judged.moves)
        self.alerts.publish(new)
        if judged.verdicts and self.settings.self_check:
            self.self_checks_queued.set()
        return len(due), None

    def _judge(self, f: OrderFacts, confirming: bool, now: datetime, judged: _Judged) -> None:
        """One due order: a verdict, a finding to report, or a later look."""
        if f.order is not None and not f.order.terminal:
            return  # an order in flight: its final transition queues it again
        findings, wait_until = held_back(check_order(f.order, f.entries, f.payouts),
                                         f.terminal_seen, now, self.refund_grace)
        if findings and not confirming:
            # First sighting. A feed holds back changes of transactions younger than the
            # oldest one still running in its database, so a change can arrive later than
            # the grace window: look once more before telling.
            judged.rechecks[f.order_id] = Recheck(now + self.grace, confirming=True)
            return
        uid = f.order.uid if f.order else 0
        judged.found.extend(NewDiscrepancy.of_order(x, f.order_id, uid, Source.REALTIME) for x in findings)
        if wait_until is not None:
            judged.rechecks[f.order_id] = Recheck(wait_until, confirming=False)
        elif f.order is not None:
            share = None if findings else settled_share(f.order, f.payouts)
            judged.verdicts[f.order_id] = Verdict("discrepancy" if findings else "ok", share)
            # No other transaction writes an order's verdict while this one holds its check
            # (FOR UPDATE), so `f` is what the verdict replaces.
            verdict_moves(judged.moves, f.order.amount, f.judged, f.settled, share)

    # ---- self-check: ask the ledger and the gateway themselves ----

    async def run_self_checks(self) -> int:
        """Ask the ledger and the gateway about a batch of settled orders: one call to each
        for the whole batch. Returns how many orders were claimed."""
        # The lease is one statement, committed alone: an idle poll costs one round trip.
        lease = await self.store.autocommit.self_checks.claim(
            utcnow(), lease_s=max(30.0, 4 * self.settings.rpc_timeout_s),
            limit=self.settings.self_check_batch)
        if not lease.orders:
            return 0
        ids = [o.order_id for o in lease.orders]
        try:
            entries, payouts = await asyncio.gather(self.ledger.orders_entries(ids),
                                                    self.gateway.query_payouts(ids))
        except Unavailable as exc:
            log.info("self-check of %d orders postponed: %s", len(ids), exc)
            await self.store.autocommit.self_checks.finish(
                ids, lease.until, utcnow(), retry_at=utcnow() + timedelta(seconds=5))
            return len(ids)
        found: list[NewDiscrepancy] = []
        for order in lease.orders:
            payout = payouts.get(order.order_id)
            findings = check_order(order, entries.get(order.order_id, []), [payout] if payout else [])
            found += [NewDiscrepancy.of_order(x, order.order_id, order.uid, Source.SELF_CHECK)
                      for x in findings]
        # The findings and the end of the lease commit together: a crash in between cannot
        # leave a batch marked checked without its findings.
        async with self.store.unit_of_work() as tx:
            new = await tx.discrepancies.record(found)
            await tx.self_checks.finish(ids, lease.until, utcnow(), retry_at=None)
        _self_checked.add(len(ids))
        self.alerts.publish(new)
        return len(ids)

    async def check_order(self, order_id: str) -> list[NewDiscrepancy]:
        """CheckOrder RPC: all three services asked now; nothing stored."""
        validate_order_id(order_id)
        known, entries, payout = await asyncio.gather(
            self.orders.get_order(order_id), self.ledger.order_entries(order_id),
            self.gateway.query_payout(order_id))
        if known is None and not entries and payout is None:
            raise OrderNotFound(order_id)
        order, changed_at = known if known is not None else (None, None)
        findings, _ = held_back(check_order(order, entries, [payout] if payout else []),
                                changed_at, utcnow(), self.refund_grace)
        uid = order.uid if order else 0
        return [NewDiscrepancy.of_order(x, order_id, uid, Source.SELF_CHECK) for x in findings]

    # ---- audits: stuck orders and conservation ----

    async def audit(self) -> list[Discrepancy]:
        now = utcnow()
        async with self.store.unit_of_work() as tx:
            stuck = await tx.audits.flag_stuck(now - timedelta(seconds=self.settings.stuck_after_s),
                                               limit=1000)
            found = await tx.discrepancies.record([
                NewDiscrepancy.of_order(
                    Finding(Reason.STUCK_ORDER,
                            f"{s.state} since {s.created_at.isoformat()} "
                            f"(> {self.settings.stuck_after_s:.0f} s)"),
                    s.order_id, s.uid, Source.REALTIME)
                for s in stuck])
        found += await self._record(await self._confirmed_unbalanced(now))
        # The conservation of the judged orders, from their running sums: no scan of orders.
        if detail := settled_mismatch(await self.store.autocommit.sums.current()):
            found += await self._record([NewDiscrepancy.of_totals("payouts", detail, Source.REALTIME)])
        self.alerts.publish(found)
        return found

    async def _confirmed_unbalanced(self, now: datetime) -> list[NewDiscrepancy]:
        """Accounts whose sums disagree, once they stopped moving for a grace window and still
        disagree, unchanged, a grace window later: an entry held back in the feed (behind a
        long transaction) may complete one meanwhile."""
        horizon = self.heads.of("account") or now
        off = await self.store.autocommit.audits.unbalanced_accounts(min(now, horizon) - self.grace)
        confirmed: list[NewDiscrepancy] = []
        seen: dict[int, tuple[datetime, int]] = {}
        for a in off:
            first, last_id = self._unbalanced.get(a.uid, (now, a.last_entry_id))
            if last_id != a.last_entry_id:
                first = now
            seen[a.uid] = (first, a.last_entry_id)
            if now - first >= self.grace:
                confirmed.append(NewDiscrepancy.of_account(
                    a.uid, ledger_conservation(a.credits, a.debits, a.refunds, a.balance), Source.REALTIME))
        self._unbalanced = seen
        return confirmed

    async def _record(self, found: list[NewDiscrepancy]) -> list[Discrepancy]:
        if not found:
            return []
        async with self.store.unit_of_work() as tx:
            return await tx.discrepancies.record(found)

    # ---- admin RPCs ----

    async def list_discrepancies(self, status: str, reason: str, order_id: str, source: str,
                                 size: int, page_token: str) -> tuple[list[Discrepancy], str]:
        """A page of the matching discrepancies, newest first, and the next page's token
        (the last id shown), empty on the last page."""
        validate_filters(status, reason, order_id, source)
        limit = page_size(size)
        found = await self.store.autocommit.discrepancies.find(
            status, reason, order_id, source, limit + 1, paging.row_of(page_token))
        return found[:limit], (paging.row_token(found[limit - 1].id) if len(found) > limit else "")

    async def resolve(self, discrepancy_id: int, status: str, note: str, actor: str) -> Discrepancy:
        validate.positive("discrepancy_id", discrepancy_id)
        validate_resolution(status, note)
        async with self.store.unit_of_work() as tx:
            done = await tx.discrepancies.resolve(discrepancy_id, status, note.strip(), actor)
        if done is None:
            raise DiscrepancyNotFound(discrepancy_id)
        log.info("discrepancy %d marked %s by %s: %s", discrepancy_id, status, actor, note)
        return done

    async def admin_audit(self, page_size: int, page_token: str) -> AuditPage:
        return await self.store.autocommit.discrepancies.admin_audit(page_size, page_token)

    async def status(self) -> Status:
        repos = self.store.autocommit
        positions, pending, open_, sums = await asyncio.gather(
            repos.feeds.positions(), repos.checks.pending(), repos.discrepancies.open_count(),
            repos.sums.current())
        return Status(positions, {name: self.heads.of(name) for name, _ in self.settings.feeds},
                      pending, open_, sums)

    async def verify_sums(self) -> list[str]:
        """Every running sum that a full recount of the projections does not confirm. A scan
        of every table: for tests, benchmarks and operators, never for a poll."""
        both = await self.store.sums_with_recount()
        return differences(both.running, both.recount)
