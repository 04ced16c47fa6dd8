"""SQL of recon_svc (asyncpg, own schema only). Pages of a feed are applied set-based
(unnest arrays), together with the feed's cursor, in one transaction."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg

from meshkit import admin_store
from recon_svc import projections
from recon_svc.domain import (
    TERMINAL_RANK,
    Discrepancy,
    EntryChange,
    EntryView,
    NewDiscrepancy,
    OrderChange,
    OrderView,
    PayoutChange,
    PayoutView,
)
from recon_svc.sums import Moves, Settled, Sums

Conn: TypeAlias = asyncpg.Connection
# Reads run on a transaction's connection or straight on the pool.
Db: TypeAlias = asyncpg.Connection | asyncpg.Pool

_DISCREPANCY_COLUMNS = (
    "id, reason, subject, order_id, uid, detail, status, source, note, created_at, updated_at")


def _discrepancy(row: asyncpg.Record) -> Discrepancy:
    return Discrepancy(**{k: row[k] for k in row.keys()})


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
class AccountOff:
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


async def keyed_lookups(conn: Conn) -> None:
    """For the rest of this transaction, plan every statement as the keyed lookup it is. The
    lookups by order id into r_entries and r_payouts have no unique index to go by, so
    without fresh statistics (autovacuum off, never analyzed) PostgreSQL guesses that an
    array of 500 keys matches most of the table and scans all of it, once per batch. No
    sequential scans, then, and no JIT compilation (which such guesses would trigger too)."""
    await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL jit = off")


class Repository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    # ---- feed positions ----

    async def ensure_feeds(self, feeds: Sequence[str]) -> None:
        await self.pool.executemany(
            "INSERT INTO feed_positions (feed) VALUES ($1) ON CONFLICT (feed) DO NOTHING",
            [(f,) for f in feeds],
        )

    async def positions(self) -> list[Position]:
        rows = await self.pool.fetch(
            "SELECT feed, cursor, applied, updated_at FROM feed_positions ORDER BY feed")
        return [Position(r["feed"], r["cursor"], r["applied"], r["updated_at"]) for r in rows]

    async def cursor_of(self, feed: str) -> str:
        value = await self.pool.fetchval("SELECT cursor FROM feed_positions WHERE feed = $1", feed)
        return str(value or "")

    async def apply_page(
        self,
        feed: str,
        from_cursor: str,
        to_cursor: str,
        orders: Sequence[tuple[OrderChange, str]],
        entries: Sequence[EntryChange],
        payouts: Sequence[PayoutChange],
        *,
        now: datetime,
        due_at: datetime,
    ) -> bool:
        """Apply one page, move its running sums and the cursor, atomically. False (and
        nothing written) when the stored cursor is no longer `from_cursor` (another replica
        applied it first)."""
        async with self.transaction() as conn:
            stored = await conn.fetchval("SELECT cursor FROM feed_positions WHERE feed = $1 FOR UPDATE", feed)
            if stored is None or stored != from_cursor:
                return False
            await keyed_lookups(conn)
            moves = Moves()
            # Orders first: a debit in the same page then finds its order.
            if orders:
                await projections.apply_orders(conn, orders, now, due_at, moves)
            if entries:
                await projections.apply_entries(conn, entries, now, due_at, moves)
            if payouts:
                await projections.apply_payouts(conn, payouts, now, due_at, moves)
            await conn.execute(
                "UPDATE feed_positions SET cursor = $2, applied = applied + $3, updated_at = $4"
                " WHERE feed = $1",
                feed, to_cursor, len(orders) + len(entries) + len(payouts), now,
            )
            await projections.add_moves(conn, moves)
        return True

    # ---- checks ----

    async def take_due(self, conn: Conn, horizon: datetime, limit: int) -> list[DueCheck]:
        rows = await conn.fetch(
            """
            SELECT order_id, gen, confirming FROM r_checks WHERE due_at <= $1
            ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED
            """,
            horizon, limit,
        )
        return [DueCheck(r["order_id"], r["gen"], r["confirming"]) for r in rows]

    async def next_due(self, conn: Conn) -> datetime | None:
        """When the earliest queued check is due (the first entry of r_checks_due)."""
        value = await conn.fetchval("SELECT due_at FROM r_checks ORDER BY due_at LIMIT 1")
        return value if isinstance(value, datetime) else None

    async def facts(self, conn: Conn, order_ids: Sequence[str]) -> dict[str, OrderFacts]:
        """The projections of these orders. `conn` must be in a transaction (see
        keyed_lookups); entries and payouts come in no particular order and are sorted here,
        since an ORDER BY could make an index on the sort key look cheaper than the keys'."""
        await keyed_lookups(conn)
        ids = list(order_ids)
        orders = await conn.fetch(
            "SELECT order_id, uid, amount, state, conflict_state, created_at, seen_terminal_at,"
            " checked_at, settled_fen, settled_paid FROM r_orders WHERE order_id = ANY($1::text[])",
            ids,
        )
        # `order_id <> ''` is r_entries_order's predicate: without it that index cannot be used.
        entries = await conn.fetch(
            "SELECT order_id, entry_id, kind, amount FROM r_entries"
            " WHERE order_id = ANY($1::text[]) AND order_id <> ''",
            ids,
        )
        payouts = await conn.fetch(
            "SELECT order_id, payout_ref, state, amount, paid_count, paid_sum FROM r_payouts"
            " WHERE order_id = ANY($1::text[])",
            ids,
        )
        found: dict[str, list[EntryView]] = {i: [] for i in ids}
        for r in sorted(entries, key=lambda r: r["entry_id"]):
            found[r["order_id"]].append(EntryView(r["kind"], r["amount"], r["entry_id"]))
        paid: dict[str, list[PayoutView]] = {i: [] for i in ids}
        for r in sorted(payouts, key=lambda r: r["payout_ref"]):
            paid[r["order_id"]].append(
                PayoutView(r["state"], r["amount"], r["paid_count"], r["paid_sum"], r["payout_ref"]))
        out = {i: OrderFacts(i, None, None, None, found[i], paid[i]) for i in ids}
        for r in orders:
            i = r["order_id"]
            settled = None if r["settled_fen"] is None else Settled(r["settled_fen"], r["settled_paid"])
            out[i] = OrderFacts(
                i, OrderView(i, r["uid"], r["amount"], r["state"], r["conflict_state"]), r["created_at"],
                r["seen_terminal_at"], found[i], paid[i], r["checked_at"] is not None, settled)
        return out

    async def finish_checks(
        self, conn: Conn, done: Sequence[DueCheck], verdicts: dict[str, Verdict], now: datetime,
        self_check: bool, later: dict[str, tuple[datetime, bool]],
    ) -> None:
        """Record verdicts (with each order's share of the settled sums) and drop the checks
        taken; a check in `later` stays queued until its time instead (something may still
        be on its way), flagged when that next look is the one that confirms a finding."""
        if verdicts:
            await conn.execute(
                """
                UPDATE r_orders o SET checked_at = $3, verdict = v.verdict,
                    self_check_due_at = CASE WHEN $4 THEN $3 ELSE o.self_check_due_at END,
                    settled_fen = v.settled_fen, settled_paid = v.settled_paid
                FROM unnest($1::text[], $2::text[], $5::bigint[], $6::bigint[])
                    AS v(order_id, verdict, settled_fen, settled_paid)
                WHERE o.order_id = v.order_id AND o.order_id = ANY($1::text[])
                """,
                list(verdicts), [v.verdict for v in verdicts.values()], now, self_check,
                [v.settled.fen if v.settled else None for v in verdicts.values()],
                [v.settled.paid if v.settled else None for v in verdicts.values()],
            )
        # Each statement joining a table with an unnest() of keys also names the keys as
        # `= ANY(...)`: whichever join PostgreSQL picks, the table is then read by them.
        await conn.execute(
            """
            DELETE FROM r_checks c USING unnest($1::text[], $2::bigint[]) AS d(order_id, gen)
            WHERE c.order_id = d.order_id AND c.gen = d.gen AND c.order_id = ANY($1::text[])
            """,
            [d.order_id for d in done if d.order_id not in later],
            [d.gen for d in done if d.order_id not in later],
        )
        if later:
            await conn.execute(
                """
                UPDATE r_checks c SET due_at = l.due_at, confirming = l.confirming
                FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS l(order_id, due_at, confirming)
                WHERE c.order_id = l.order_id AND c.order_id = ANY($1::text[])
                """,
                list(later), [at for at, _ in later.values()], [c for _, c in later.values()],
            )

    async def add_moves(self, conn: Conn, moves: Moves) -> None:
        await projections.add_moves(conn, moves)

    async def pending_checks(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM r_checks"))

    # ---- self-check queue (a lease: claimed rows move their due time ahead) ----

    async def claim_self_checks(
        self, now: datetime, lease_s: float, limit: int
    ) -> tuple[list[OrderView], datetime]:
        """Lease up to `limit` due orders; returns them and the lease (their new due time)."""
        lease = now + timedelta(seconds=lease_s)
        # `= ANY(ARRAY(...))` rather than `IN (...)`: the outer rows are then fetched by
        # primary key, where a join with the subquery may be planned as a scan of r_orders.
        rows = await self.pool.fetch(
            """
            UPDATE r_orders o SET self_check_due_at = $2
            WHERE o.order_id = ANY(ARRAY(
                SELECT order_id FROM r_orders WHERE self_check_due_at <= $1
                ORDER BY self_check_due_at LIMIT $3 FOR UPDATE SKIP LOCKED))
            RETURNING o.order_id, o.uid, o.amount, o.state, o.conflict_state
            """,
            now, lease, limit,
        )
        return [OrderView(r["order_id"], r["uid"], r["amount"], r["state"], r["conflict_state"])
                for r in rows], lease

    async def finish_self_checks(self, order_ids: Sequence[str], lease: datetime, now: datetime,
                                 retry_at: datetime | None) -> None:
        # Only the holder of a lease clears it; a re-check queued meanwhile stays queued.
        await self.pool.execute(
            """
            UPDATE r_orders SET self_check_due_at = $4,
                self_checked_at = CASE WHEN $4::timestamptz IS NULL THEN $3 ELSE self_checked_at END
            WHERE order_id = ANY($1::text[]) AND self_check_due_at = $2
            """,
            list(order_ids), lease, now, retry_at,
        )

    # ---- discrepancies ----

    async def record(self, conn: Db, found: Sequence[NewDiscrepancy]) -> list[Discrepancy]:
        """Store findings; returns only those not stored before."""
        if not found:
            return []
        rows = await conn.fetch(
            f"""
            INSERT INTO discrepancies (reason, subject, order_id, uid, detail, source)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
            ON CONFLICT (reason, subject, source) DO NOTHING
            RETURNING {_DISCREPANCY_COLUMNS}
            """,
            [f.reason for f in found], [f.subject for f in found], [f.order_id for f in found],
            [f.uid for f in found], [f.detail for f in found], [f.source for f in found],
        )
        return [_discrepancy(r) for r in rows]

    async def list_discrepancies(
        self, status: str, reason: str, order_id: str, source: str, limit: int, before: int | None
    ) -> list[Discrepancy]:
        """Newest first, below id `before` (None: from the newest)."""
        rows = await self.pool.fetch(
            f"""
            SELECT {_DISCREPANCY_COLUMNS} FROM discrepancies
            WHERE ($1 = '' OR status = $1) AND ($2 = '' OR reason = $2)
              AND ($3 = '' OR order_id = $3) AND ($4 = '' OR source = $4)
              AND ($6::bigint IS NULL OR id < $6)
            ORDER BY id DESC LIMIT $5
            """,
            status, reason, order_id, source, limit, before,
        )
        return [_discrepancy(r) for r in rows]

    async def resolve(self, discrepancy_id: int, status: str, note: str,
                      actor: str) -> Discrepancy | None:
        """Mark a discrepancy, audited (old and new status and note) in the same transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                "SELECT status, note FROM discrepancies WHERE id = $1 FOR UPDATE", discrepancy_id)
            if old is None:
                return None
            row = await conn.fetchrow(
                f"""
                UPDATE discrepancies SET status = $2, note = $3, updated_at = now()
                WHERE id = $1 RETURNING {_DISCREPANCY_COLUMNS}
                """,
                discrepancy_id, status, note,
            )
            await admin_store.record(conn, actor, "discrepancy.resolve", str(discrepancy_id),
                                     {"status": old["status"], "note": old["note"]},
                                     {"status": status, "note": note}, note)
        return _discrepancy(row)

    async def admin_audit(self, page_size: int, page_token: str) -> tuple[list[admin_store.AuditEntry], str]:
        return await admin_store.list_audit(self.pool, page_size, page_token)

    async def open_discrepancies(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM discrepancies WHERE status = 'OPEN'"))

    # ---- audits: stuck orders, conservation ----

    async def flag_stuck(self, conn: Conn, created_before: datetime, limit: int) -> list[StuckOrder]:
        rows = await conn.fetch(
            f"""
            UPDATE r_orders o SET stuck_flagged = true
            WHERE o.order_id = ANY(ARRAY(
                SELECT order_id FROM r_orders
                WHERE state_rank < {TERMINAL_RANK} AND NOT stuck_flagged AND created_at < $1
                ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))
            RETURNING o.order_id, o.uid, o.state, o.created_at
            """,
            created_before, limit,
        )
        return [StuckOrder(r["order_id"], r["uid"], r["state"], r["created_at"]) for r in rows]

    async def accounts_off(self, settled_before: datetime, limit: int = 1000) -> list[AccountOff]:
        rows = await self.pool.fetch(
            """
            SELECT uid, credits, debits, refunds, balance, last_entry_id FROM r_balances
            WHERE credits - debits + refunds <> balance AND updated_at < $1
            ORDER BY updated_at LIMIT $2
            """,
            settled_before, limit,
        )
        return [AccountOff(r["uid"], r["credits"], r["debits"], r["refunds"], r["balance"],
                           r["last_entry_id"]) for r in rows]

    async def running_sums(self) -> Sums:
        """The running sums: a dozen rows by primary key, whatever the history."""
        rows = await self.pool.fetch("SELECT name, count, fen FROM r_totals")
        return Sums.of((r["name"], r["count"], r["fen"]) for r in rows)

    async def sums_and_recount(self) -> tuple[Sums, Sums]:
        """The running sums and the same sums counted from the projections, in one snapshot
        (so they agree whatever is being applied meanwhile). The recount scans every table:
        for verification only, never for a poll."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                 readonly=True):
            running = await conn.fetch("SELECT name, count, fen FROM r_totals")
            recount = await conn.fetch("SELECT name, count, fen FROM r_totals_recount")
        return (Sums.of((r["name"], r["count"], r["fen"]) for r in running),
                Sums.of((r["name"], r["count"], r["fen"]) for r in recount))

    # ---- daily batch ----

    async def daily_orders(
        self, start: datetime, end: datetime, stuck_before: datetime
    ) -> list[asyncpg.Record]:
        """One pass over the day's orders joined with their entries and payouts, grouped by
        state and channel: counts and sums, plus the ids of orders that are not plainly
        clean. `clean` here is strictly narrower than the domain rules (only the shapes
        that can have no finding), so every order with a finding is among `suspects`."""
        return await self.pool.fetch(DAILY_ORDERS_SQL, start, end, stuck_before)

    async def daily_orphans(self, start: datetime, end: datetime, applied_before: datetime) -> list[str]:
        rows = await self.pool.fetch(
            """
            SELECT order_id FROM r_entries e
            WHERE e.created_at >= $1 AND e.created_at < $2 AND e.order_id <> ''
              AND e.kind IN ('DEBIT', 'REFUND') AND e.applied_at < $3
              AND NOT EXISTS (SELECT 1 FROM r_orders o WHERE o.order_id = e.order_id)
            UNION
            SELECT order_id FROM r_payouts p
            WHERE p.created_at >= $1 AND p.created_at < $2 AND p.created_at < $3
              AND NOT EXISTS (SELECT 1 FROM r_orders o WHERE o.order_id = p.order_id)
            """,
            start, end, applied_before,
        )
        return [r["order_id"] for r in rows]

    async def daily_ledger(self, start: datetime, end: datetime) -> tuple[asyncpg.Record, list[AccountOff]]:
        """Ledger sums of the day's entries, and every account active that day whose balance
        after its last entry of the day is not what all its entries up to there add up to."""
        totals = await self.pool.fetchrow(
            """
            SELECT count(*) AS entries,
                   coalesce(sum(amount) FILTER (WHERE kind = 'CREDIT'), 0)::bigint AS credits,
                   coalesce(sum(amount) FILTER (WHERE kind = 'DEBIT'), 0)::bigint AS debits,
                   coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0)::bigint AS refunds,
                   count(*) FILTER (WHERE kind = 'VOID') AS voids
            FROM r_entries WHERE created_at >= $1 AND created_at < $2
            """,
            start, end,
        )
        assert totals is not None
        rows = await self.pool.fetch(
            """
            WITH active AS (
                SELECT uid, max(entry_id) AS last_id FROM r_entries
                WHERE created_at >= $1 AND created_at < $2 AND uid IS NOT NULL
                  AND kind IN ('CREDIT', 'DEBIT', 'REFUND')
                GROUP BY uid),
            sums AS (
                SELECT a.uid, a.last_id,
                       coalesce(sum(x.amount) FILTER (WHERE x.kind = 'CREDIT'), 0)::bigint AS credits,
                       coalesce(sum(x.amount) FILTER (WHERE x.kind = 'DEBIT'), 0)::bigint AS debits,
                       coalesce(sum(x.amount) FILTER (WHERE x.kind = 'REFUND'), 0)::bigint AS refunds
                FROM active a JOIN r_entries x ON x.uid = a.uid AND x.entry_id <= a.last_id
                GROUP BY a.uid, a.last_id)
            SELECT s.uid, s.credits, s.debits, s.refunds, l.balance_after AS balance
            FROM sums s JOIN r_entries l ON l.entry_id = s.last_id
            WHERE s.credits - s.debits + s.refunds IS DISTINCT FROM l.balance_after
            ORDER BY s.uid
            """,
            start, end,
        )
        return totals, [AccountOff(r["uid"], r["credits"], r["debits"], r["refunds"], r["balance"] or 0)
                        for r in rows]

    async def save_report(self, day: date, orders: int, discrepancies: int, report: dict[str, Any],
                          text: str) -> tuple[datetime, str]:
        """Store (or replace) a day's report; returns its time and the JSON as stored."""
        row = await self.pool.fetchrow(
            """
            INSERT INTO daily_reports (date, orders, discrepancies, report, text)
            VALUES ($1, $2, $3, $4::jsonb, $5)
            ON CONFLICT (date) DO UPDATE SET orders = excluded.orders,
                discrepancies = excluded.discrepancies, report = excluded.report,
                text = excluded.text, created_at = now()
            RETURNING created_at, report::text AS report
            """,
            day, orders, discrepancies, json.dumps(report), text,
        )
        assert row is not None
        return row["created_at"], row["report"]

    async def get_report(self, day: date) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT date, orders, discrepancies, report::text AS report, text, created_at "
            "FROM daily_reports WHERE date = $1",
            day,
        )


# The day's orders, their entries and payouts, aggregated per order, then per state and
# channel. Used as is by the daily batch and (as one query) as the benchmark's baseline.
DAILY_ORDERS_SQL = f"""
WITH o AS (
    SELECT order_id, amount, channel, state, state_rank, conflict_state, created_at
    FROM r_orders WHERE created_at >= $1 AND created_at < $2),
e AS (
    SELECT e.order_id,
           count(*) FILTER (WHERE e.kind = 'DEBIT') AS debits,
           count(*) FILTER (WHERE e.kind = 'REFUND') AS refunds,
           coalesce(sum(e.amount) FILTER (WHERE e.kind = 'DEBIT'), 0) AS debit_fen,
           coalesce(sum(e.amount) FILTER (WHERE e.kind = 'REFUND'), 0) AS refund_fen,
           bool_and(e.amount = o.amount) FILTER (WHERE e.kind IN ('DEBIT', 'REFUND')) AS amounts_ok
    FROM r_entries e JOIN o ON o.order_id = e.order_id
    GROUP BY e.order_id),
p AS (
    SELECT p.order_id,
           coalesce(sum(p.paid_count), 0) AS paid,
           count(*) FILTER (WHERE p.state NOT IN ('SUCCEEDED', 'FAILED')) AS in_flight,
           coalesce(sum(p.paid_sum), 0) AS paid_fen
    FROM r_payouts p JOIN o ON o.order_id = p.order_id
    GROUP BY p.order_id),
j AS (
    SELECT o.*, coalesce(e.debits, 0) AS debits, coalesce(e.refunds, 0) AS refunds,
           coalesce(e.debit_fen, 0) AS debit_fen, coalesce(e.refund_fen, 0) AS refund_fen,
           coalesce(e.amounts_ok, true) AS amounts_ok, coalesce(p.paid, 0) AS paid,
           coalesce(p.in_flight, 0) AS in_flight, coalesce(p.paid_fen, 0) AS paid_fen
    FROM o LEFT JOIN e ON e.order_id = o.order_id LEFT JOIN p ON p.order_id = o.order_id),
k AS (
    SELECT j.*, CASE
        WHEN j.state_rank < {TERMINAL_RANK} THEN j.created_at >= $3
        WHEN j.conflict_state <> '' THEN false
        WHEN j.state = 'SUCCEEDED' THEN j.debits = 1 AND j.refunds = 0 AND j.paid = 1
             AND j.in_flight = 0 AND j.amounts_ok AND j.paid_fen = j.amount
        WHEN j.state = 'FAILED' THEN j.paid = 0 AND j.in_flight = 0 AND (
             (j.debits = 0 AND j.refunds = 0) OR (j.debits = 1 AND j.refunds = 1 AND j.amounts_ok))
        ELSE false END AS clean
    FROM j)
SELECT state, channel, count(*) AS orders, coalesce(sum(amount), 0)::bigint AS amount_fen,
       coalesce(sum(debit_fen), 0)::bigint AS debit_fen,
       coalesce(sum(refund_fen), 0)::bigint AS refund_fen,
       coalesce(sum(paid_fen), 0)::bigint AS paid_fen,
       coalesce(array_agg(order_id) FILTER (WHERE NOT clean), '{{}}') AS suspects
FROM k GROUP BY state, channel ORDER BY state, channel
"""

