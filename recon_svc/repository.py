"""SQL of recon_svc (asyncpg, own schema only). Pages of a feed are applied set-based
(unnest arrays), together with the feed's cursor, in one transaction."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeAlias

import asyncpg

from recon_svc.domain import (
    PAYOUT_RANK,
    SUCCEEDED,
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


@dataclass(frozen=True)
class Totals:
    credits: int
    debits: int
    refunds: int
    balances: int
    gateway_succeeded: int
    orders_succeeded: int


@dataclass(frozen=True)
class SettledPayoutTotals:
    """Σ succeeded orders vs Σ paid at the gateway over orders already judged, with no
    re-check pending and no discrepancy of their own: any difference is unexplained."""

    orders: int
    orders_fen: int
    paid_fen: int


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
        """Apply one page and move the cursor, atomically. False (and nothing written) when
        the stored cursor is no longer `from_cursor` (another replica applied it first)."""
        async with self.transaction() as conn:
            stored = await conn.fetchval("SELECT cursor FROM feed_positions WHERE feed = $1 FOR UPDATE", feed)
            if stored is None or stored != from_cursor:
                return False
            # Orders first: a debit in the same page then finds its order.
            if orders:
                await _apply_orders(conn, orders, now, due_at)
            if entries:
                await _apply_entries(conn, entries, now, due_at)
            if payouts:
                await _apply_payouts(conn, payouts, now, due_at)
            await conn.execute(
                "UPDATE feed_positions SET cursor = $2, applied = applied + $3, updated_at = $4"
                " WHERE feed = $1",
                feed, to_cursor, len(orders) + len(entries) + len(payouts), now,
            )
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

    async def facts(self, conn: Db, order_ids: Sequence[str]) -> dict[str, OrderFacts]:
        ids = list(order_ids)
        orders = await conn.fetch(
            "SELECT order_id, uid, amount, state, conflict_state, created_at, seen_terminal_at"
            " FROM r_orders WHERE order_id = ANY($1)",
            ids,
        )
        entries = await conn.fetch(
            "SELECT order_id, entry_id, kind, amount FROM r_entries"
            " WHERE order_id = ANY($1) ORDER BY entry_id",
            ids,
        )
        payouts = await conn.fetch(
            """
            SELECT order_id, payout_ref, state, amount, paid_count, paid_sum
            FROM r_payouts WHERE order_id = ANY($1) ORDER BY payout_ref
            """,
            ids,
        )
        by_order: dict[str, tuple[OrderView | None, datetime | None, datetime | None]] = {
            r["order_id"]: (OrderView(r["order_id"], r["uid"], r["amount"], r["state"], r["conflict_state"]),
                            r["created_at"], r["seen_terminal_at"])
            for r in orders
        }
        found: dict[str, list[EntryView]] = {i: [] for i in ids}
        for r in entries:
            found[r["order_id"]].append(EntryView(r["kind"], r["amount"], r["entry_id"]))
        paid: dict[str, list[PayoutView]] = {i: [] for i in ids}
        for r in payouts:
            paid[r["order_id"]].append(
                PayoutView(r["state"], r["amount"], r["paid_count"], r["paid_sum"], r["payout_ref"]))
        return {
            i: OrderFacts(i, *by_order.get(i, (None, None, None)), found[i], paid[i])
            for i in ids
        }

    async def finish_checks(
        self, conn: Conn, done: Sequence[DueCheck], verdicts: dict[str, str], now: datetime, self_check: bool,
        later: dict[str, tuple[datetime, bool]],
    ) -> None:
        """Record verdicts and drop the checks taken; a check in `later` stays queued until
        its time instead (something may still be on its way), flagged when that next look
        is the one that confirms a finding."""
        if verdicts:
            await conn.execute(
                """
                UPDATE r_orders o SET checked_at = $3, verdict = v.verdict,
                    self_check_due_at = CASE WHEN $4 THEN $3 ELSE o.self_check_due_at END
                FROM unnest($1::text[], $2::text[]) AS v(order_id, verdict)
                WHERE o.order_id = v.order_id
                """,
                list(verdicts), list(verdicts.values()), now, self_check,
            )
        await conn.execute(
            """
            DELETE FROM r_checks c USING unnest($1::text[], $2::bigint[]) AS d(order_id, gen)
            WHERE c.order_id = d.order_id AND c.gen = d.gen
            """,
            [d.order_id for d in done if d.order_id not in later],
            [d.gen for d in done if d.order_id not in later],
        )
        if later:
            await conn.execute(
                """
                UPDATE r_checks c SET due_at = l.due_at, confirming = l.confirming
                FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS l(order_id, due_at, confirming)
                WHERE c.order_id = l.order_id
                """,
                list(later), [at for at, _ in later.values()], [c for _, c in later.values()],
            )

    async def pending_checks(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM r_checks"))

    # ---- self-check queue (a lease: claimed rows move their due time ahead) ----

    async def claim_self_checks(
        self, now: datetime, lease_s: float, limit: int
    ) -> list[tuple[OrderView, datetime]]:
        rows = await self.pool.fetch(
            """
            UPDATE r_orders o SET self_check_due_at = $1 + $2 * interval '1 second'
            WHERE o.order_id IN (
                SELECT order_id FROM r_orders WHERE self_check_due_at <= $1
                ORDER BY self_check_due_at LIMIT $3 FOR UPDATE SKIP LOCKED)
            RETURNING o.order_id, o.uid, o.amount, o.state, o.conflict_state, o.self_check_due_at
            """,
            now, lease_s, limit,
        )
        return [(OrderView(r["order_id"], r["uid"], r["amount"], r["state"], r["conflict_state"]),
                 r["self_check_due_at"]) for r in rows]

    async def finish_self_check(self, order_id: str, lease: datetime, now: datetime,
                                retry_at: datetime | None) -> None:
        # Only the holder of this lease clears it; a re-check queued meanwhile stays queued.
        await self.pool.execute(
            """
            UPDATE r_orders SET self_check_due_at = $4,
                self_checked_at = CASE WHEN $4::timestamptz IS NULL THEN $3 ELSE self_checked_at END
            WHERE order_id = $1 AND self_check_due_at = $2
            """,
            order_id, lease, now, retry_at,
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
        self, status: str, reason: str, order_id: str, source: str, limit: int
    ) -> list[Discrepancy]:
        rows = await self.pool.fetch(
            f"""
            SELECT {_DISCREPANCY_COLUMNS} FROM discrepancies
            WHERE ($1 = '' OR status = $1) AND ($2 = '' OR reason = $2)
              AND ($3 = '' OR order_id = $3) AND ($4 = '' OR source = $4)
            ORDER BY id DESC LIMIT $5
            """,
            status, reason, order_id, source, limit,
        )
        return [_discrepancy(r) for r in rows]

    async def resolve(self, discrepancy_id: int, status: str, note: str) -> Discrepancy | None:
        row = await self.pool.fetchrow(
            f"""
            UPDATE discrepancies SET status = $2, note = $3, updated_at = now()
            WHERE id = $1 RETURNING {_DISCREPANCY_COLUMNS}
            """,
            discrepancy_id, status, note,
        )
        return _discrepancy(row) if row else None

    async def open_discrepancies(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM discrepancies WHERE status = 'OPEN'"))

    # ---- audits: stuck orders, conservation ----

    async def flag_stuck(self, conn: Conn, created_before: datetime, limit: int) -> list[StuckOrder]:
        rows = await conn.fetch(
            """
            UPDATE r_orders o SET stuck_flagged = true
            WHERE o.order_id IN (
                SELECT order_id FROM r_orders
                WHERE state_rank < 3 AND NOT stuck_flagged AND created_at < $1
                ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
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

    async def settled_payout_totals(self) -> SettledPayoutTotals:
        row = await self.pool.fetchrow(
            """
            SELECT count(*) AS orders,
                   coalesce(sum(o.amount) FILTER (WHERE o.state = 'SUCCEEDED'), 0)::bigint AS orders_fen,
                   coalesce(sum(p.paid), 0)::bigint AS paid_fen
            FROM r_orders o
            LEFT JOIN (SELECT order_id, sum(paid_sum) AS paid FROM r_payouts GROUP BY order_id) p
                   USING (order_id)
            WHERE o.state_rank = 3 AND o.checked_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM r_checks c WHERE c.order_id = o.order_id)
              AND NOT EXISTS (SELECT 1 FROM discrepancies d WHERE d.order_id = o.order_id)
            """
        )
        assert row is not None
        return SettledPayoutTotals(row["orders"], row["orders_fen"], row["paid_fen"])

    async def totals(self) -> Totals:
        row = await self.pool.fetchrow(
            """
            SELECT (SELECT coalesce(sum(credits), 0) FROM r_balances) AS credits,
                   (SELECT coalesce(sum(debits), 0) FROM r_balances) AS debits,
                   (SELECT coalesce(sum(refunds), 0) FROM r_balances) AS refunds,
                   (SELECT coalesce(sum(balance), 0) FROM r_balances) AS balances,
                   (SELECT coalesce(sum(paid_sum), 0) FROM r_payouts) AS gateway_succeeded,
                   (SELECT coalesce(sum(amount), 0) FROM r_orders WHERE state = 'SUCCEEDED')
                       AS orders_succeeded
            """
        )
        assert row is not None
        return Totals(**{k: int(row[k]) for k in row.keys()})

    async def checked_orders(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM r_orders WHERE checked_at IS NOT NULL"))

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
DAILY_ORDERS_SQL = """
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
        WHEN j.state_rank < 3 THEN j.created_at >= $3
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
       coalesce(array_agg(order_id) FILTER (WHERE NOT clean), '{}') AS suspects
FROM k GROUP BY state, channel ORDER BY state, channel
"""


async def _apply_orders(conn: Conn, orders: Sequence[tuple[OrderChange, str]], now: datetime,
                        due_at: datetime) -> None:
    await conn.execute(
        """
        WITH incoming AS (
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                                 $6::smallint[], $7::text[], $8::timestamptz[], $9::timestamptz[],
                                 $10::text[])
                AS t(order_id, uid, amount, channel, state, state_rank, failure_reason,
                     created_at, updated_at, conflict_state)),
        up AS (
            INSERT INTO r_orders AS o (order_id, uid, amount, channel, state, state_rank, failure_reason,
                                       created_at, updated_at, conflict_state, terminal_at, seen_terminal_at)
            SELECT order_id, uid, amount, channel, state, state_rank, failure_reason, created_at,
                   updated_at, conflict_state,
                   CASE WHEN state_rank = 3 THEN updated_at END,
                   CASE WHEN state_rank = 3 THEN $11::timestamptz END
            FROM incoming
            ON CONFLICT (order_id) DO UPDATE SET
                conflict_state = CASE
                    WHEN o.state_rank = 3 AND excluded.state_rank = 3 AND excluded.state <> o.state
                        THEN excluded.state
                    WHEN o.conflict_state = '' THEN excluded.conflict_state
                    ELSE o.conflict_state END,
                state = CASE WHEN excluded.state_rank > o.state_rank THEN excluded.state ELSE o.state END,
                failure_reason = CASE WHEN excluded.state_rank > o.state_rank
                                      THEN excluded.failure_reason ELSE o.failure_reason END,
                state_rank = GREATEST(o.state_rank, excluded.state_rank),
                updated_at = GREATEST(o.updated_at, excluded.updated_at),
                terminal_at = COALESCE(o.terminal_at, excluded.terminal_at),
                seen_terminal_at = COALESCE(o.seen_terminal_at, excluded.seen_terminal_at)
            RETURNING order_id, state_rank)
        INSERT INTO r_checks AS c (order_id, due_at, first_at)
        SELECT order_id, $12::timestamptz, $11::timestamptz FROM up WHERE state_rank = 3 ORDER BY order_id
        ON CONFLICT (order_id) DO UPDATE SET due_at = excluded.due_at, gen = c.gen + 1,
            confirming = false
        """,
        [c.order_id for c, _ in orders], [c.uid for c, _ in orders], [c.amount for c, _ in orders],
        [c.channel for c, _ in orders], [c.state for c, _ in orders], [c.rank for c, _ in orders],
        [c.failure_reason for c, _ in orders], [c.created_at for c, _ in orders],
        [c.changed_at for c, _ in orders], [conflict for _, conflict in orders], now, due_at,
    )


async def _apply_entries(conn: Conn, entries: Sequence[EntryChange], now: datetime, due_at: datetime) -> None:
    # Only entries not seen before move the running sums (RETURNING of ON CONFLICT DO
    # NOTHING), which is what makes a replayed page harmless.
    await conn.execute(
        """
        WITH incoming AS (
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
                                 $6::text[], $7::bigint[], $8::timestamptz[])
                AS t(entry_id, uid, kind, amount, order_id, reward_id, balance_after, created_at)),
        ins AS (
            INSERT INTO r_entries (entry_id, uid, kind, amount, order_id, reward_id, balance_after,
                                   created_at, applied_at)
            SELECT entry_id, uid, kind, amount, order_id, reward_id, balance_after, created_at, $9
            FROM incoming
            ON CONFLICT (entry_id) DO NOTHING
            RETURNING entry_id, uid, kind, amount, order_id, balance_after),
        bal AS (
            INSERT INTO r_balances AS b (uid, credits, debits, refunds, balance, last_entry_id, updated_at)
            SELECT uid,
                   coalesce(sum(amount) FILTER (WHERE kind = 'CREDIT'), 0),
                   coalesce(sum(amount) FILTER (WHERE kind = 'DEBIT'), 0),
                   coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
                   coalesce((array_agg(balance_after ORDER BY entry_id DESC))[1], 0),
                   max(entry_id), $9
            FROM ins WHERE uid IS NOT NULL AND kind IN ('CREDIT', 'DEBIT', 'REFUND')
            GROUP BY uid
            ON CONFLICT (uid) DO UPDATE SET
                credits = b.credits + excluded.credits,
                debits = b.debits + excluded.debits,
                refunds = b.refunds + excluded.refunds,
                balance = CASE WHEN excluded.last_entry_id > b.last_entry_id
                               THEN excluded.balance ELSE b.balance END,
                last_entry_id = GREATEST(b.last_entry_id, excluded.last_entry_id),
                updated_at = excluded.updated_at)
        INSERT INTO r_checks AS c (order_id, due_at, first_at)
        SELECT DISTINCT i.order_id, $10::timestamptz, $9::timestamptz
        FROM ins i LEFT JOIN r_orders o ON o.order_id = i.order_id
        WHERE i.order_id <> '' AND (o.order_id IS NULL OR o.state_rank = 3)
        ORDER BY 1
        ON CONFLICT (order_id) DO UPDATE SET due_at = excluded.due_at, gen = c.gen + 1,
            confirming = false
        """,
        [e.entry_id for e in entries], [e.uid or None for e in entries], [e.kind for e in entries],
        [e.amount for e in entries], [e.order_id for e in entries], [e.reward_id for e in entries],
        [e.balance_after for e in entries], [e.created_at for e in entries], now, due_at,
    )


async def _apply_payouts(
    conn: Conn, payouts: Sequence[PayoutChange], now: datetime, due_at: datetime
) -> None:
    fresh_cursors = {
        r["cursor"] for r in await conn.fetch(
            """
            INSERT INTO r_payout_events (cursor, order_id, payout_ref, state, amount, changed_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                 $6::timestamptz[])
            ON CONFLICT (cursor) DO NOTHING RETURNING cursor
            """,
            [p.cursor for p in payouts], [p.order_id for p in payouts], [p.payout_ref for p in payouts],
            [p.state for p in payouts], [p.amount for p in payouts], [p.changed_at for p in payouts],
        )
    }
    # Fold the page's new events per record, in feed order: the furthest state wins, every
    # arrival at SUCCEEDED counts.
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for p in payouts:
        if p.cursor not in fresh_cursors:
            continue
        rank = PAYOUT_RANK.get(p.state, 0)
        rec = records.setdefault((p.order_id, p.payout_ref), {
            "uid": p.uid, "channel": p.channel, "amount": p.amount, "state": p.state, "rank": rank,
            "reason": p.failure_reason, "paid_count": 0, "paid_sum": 0, "created": p.changed_at,
            "updated": p.changed_at,
        })
        if rank >= rec["rank"]:
            rec.update(amount=p.amount, state=p.state, rank=rank, reason=p.failure_reason, uid=p.uid,
                       channel=p.channel)
        rec["updated"] = p.changed_at
        if p.state == SUCCEEDED:
            rec["paid_count"] += 1
            rec["paid_sum"] += p.amount
    if not records:
        return
    keys = sorted(records)
    vals = [records[k] for k in keys]
    await conn.execute(
        """
        WITH up AS (
            INSERT INTO r_payouts AS p (order_id, payout_ref, uid, channel, amount, state, state_rank,
                                        failure_reason, paid_count, paid_sum, created_at, updated_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                                 $7::smallint[], $8::text[], $9::int[], $10::bigint[],
                                 $11::timestamptz[], $12::timestamptz[])
            ON CONFLICT (order_id, payout_ref) DO UPDATE SET
                state = CASE WHEN excluded.state_rank >= p.state_rank THEN excluded.state ELSE p.state END,
                amount = CASE WHEN excluded.state_rank >= p.state_rank THEN excluded.amount ELSE p.amount END,
                failure_reason = CASE WHEN excluded.state_rank >= p.state_rank
                                      THEN excluded.failure_reason ELSE p.failure_reason END,
                state_rank = GREATEST(p.state_rank, excluded.state_rank),
                paid_count = p.paid_count + excluded.paid_count,
                paid_sum = p.paid_sum + excluded.paid_sum,
                updated_at = excluded.updated_at
            RETURNING order_id)
        INSERT INTO r_checks AS c (order_id, due_at, first_at)
        SELECT DISTINCT u.order_id, $13::timestamptz, $15::timestamptz
        FROM up u LEFT JOIN r_orders o ON o.order_id = u.order_id
        WHERE o.order_id IS NULL OR o.state_rank = $14
        ORDER BY 1
        ON CONFLICT (order_id) DO UPDATE SET due_at = excluded.due_at, gen = c.gen + 1,
            confirming = false
        """,
        [k[0] for k in keys], [k[1] for k in keys], [v["uid"] for v in vals], [v["channel"] for v in vals],
        [v["amount"] for v in vals], [v["state"] for v in vals], [v["rank"] for v in vals],
        [v["reason"] for v in vals], [v["paid_count"] for v in vals], [v["paid_sum"] for v in vals],
        [v["created"] for v in vals], [v["updated"] for v in vals], due_at, TERMINAL_RANK, now,
    )
