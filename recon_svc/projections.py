"""SQL that applies one feed page to recon's projections (asyncpg, set-based: unnest
arrays), queues the orders to judge, and says how the running sums move. Every statement
keys its rows by the source's own key, so a page applied twice changes nothing, and only
rows a statement inserted or changed move a sum."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from recon_svc.domain import PAYOUT_RANK, SUCCEEDED, TERMINAL_RANK, EntryChange, OrderChange, PayoutChange
from recon_svc.sums import Moves, Sum

Conn: TypeAlias = asyncpg.Connection

# Sums are read from each statement's own RETURNING rows joined with the rows as they were
# before it (`prior`, read in the same snapshot). Only the follower of the feed that carries
# a kind writes those rows (orders: withdraw, entries and balances: account), under that
# feed's position lock, so no other transaction can change them in between.
APPLY_ORDERS_SQL = f"""
WITH incoming AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                         $6::smallint[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[])
        AS t(order_id, uid, amount, channel, state, state_rank, failure_reason,
             created_at, updated_at, conflict_state)),
prior AS (
    SELECT order_id, state_rank FROM r_orders WHERE order_id = ANY($1::text[])),
up AS (
    INSERT INTO r_orders AS o (order_id, uid, amount, channel, state, state_rank, failure_reason,
                               created_at, updated_at, conflict_state, terminal_at, seen_terminal_at)
    SELECT order_id, uid, amount, channel, state, state_rank, failure_reason, created_at,
           updated_at, conflict_state,
           CASE WHEN state_rank = {TERMINAL_RANK} THEN updated_at END,
           CASE WHEN state_rank = {TERMINAL_RANK} THEN $11::timestamptz END
    FROM incoming
    ON CONFLICT (order_id) DO UPDATE SET
        conflict_state = CASE
            WHEN o.state_rank = {TERMINAL_RANK} AND excluded.state_rank = {TERMINAL_RANK}
                 AND excluded.state <> o.state
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
    RETURNING order_id, amount, state, state_rank),
queued AS (
    INSERT INTO r_checks AS c (order_id, due_at, first_at)
    SELECT order_id, $12::timestamptz, $11::timestamptz FROM up WHERE state_rank = {TERMINAL_RANK}
    ORDER BY order_id
    ON CONFLICT (order_id) DO UPDATE SET due_at = excluded.due_at, gen = c.gen + 1,
        confirming = false)
-- New orders, and orders that became final with this page (a final order stays final).
SELECT 'order' AS name, count(*) AS n, coalesce(sum(u.amount), 0)::bigint AS fen
FROM up u LEFT JOIN prior p USING (order_id) WHERE p.order_id IS NULL
UNION ALL
SELECT lower(u.state), count(*), coalesce(sum(u.amount), 0)::bigint
FROM up u LEFT JOIN prior p USING (order_id)
WHERE u.state_rank = {TERMINAL_RANK} AND coalesce(p.state_rank, -1) < {TERMINAL_RANK}
GROUP BY u.state
"""

APPLY_ENTRIES_SQL = f"""
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
prior AS (
    SELECT uid, balance FROM r_balances WHERE uid = ANY($2::bigint[])),
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
        updated_at = excluded.updated_at
    RETURNING uid, balance),
queued AS (
    INSERT INTO r_checks AS c (order_id, due_at, first_at)
    SELECT DISTINCT i.order_id, $10::timestamptz, $9::timestamptz
    FROM ins i LEFT JOIN r_orders o ON o.order_id = i.order_id
    WHERE i.order_id <> '' AND (o.order_id IS NULL OR o.state_rank = {TERMINAL_RANK})
    ORDER BY 1
    ON CONFLICT (order_id) DO UPDATE SET due_at = excluded.due_at, gen = c.gen + 1,
        confirming = false)
-- Only entries not seen before (RETURNING of ON CONFLICT DO NOTHING) count, which is what
-- makes a replayed page harmless; the same entries move r_balances.
SELECT lower(kind) AS name, count(*) AS n, coalesce(sum(amount), 0)::bigint AS fen
FROM ins WHERE uid IS NOT NULL OR kind = 'VOID' GROUP BY kind
UNION ALL
SELECT 'balance', count(*) FILTER (WHERE p.uid IS NULL),
       coalesce(sum(b.balance - coalesce(p.balance, 0)), 0)::bigint
FROM bal b LEFT JOIN prior p USING (uid)
"""

PAYOUT_EVENTS_SQL = """
INSERT INTO r_payout_events (cursor, order_id, payout_ref, state, amount, changed_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[])
ON CONFLICT (cursor) DO NOTHING RETURNING cursor
"""

APPLY_PAYOUTS_SQL = """
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
"""

ADD_MOVES_SQL = """
INSERT INTO r_totals AS t (name, count, fen)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ORDER BY 1
ON CONFLICT (name) DO UPDATE SET count = t.count + excluded.count, fen = t.fen + excluded.fen
"""


async def apply_orders(conn: Conn, orders: Sequence[tuple[OrderChange, str]], now: datetime,
                       due_at: datetime, moves: Moves) -> None:
    rows = await conn.fetch(
        APPLY_ORDERS_SQL,
        [c.order_id for c, _ in orders], [c.uid for c, _ in orders], [c.amount for c, _ in orders],
        [c.channel for c, _ in orders], [c.state for c, _ in orders], [c.rank for c, _ in orders],
        [c.failure_reason for c, _ in orders], [c.created_at for c, _ in orders],
        [c.changed_at for c, _ in orders], [conflict for _, conflict in orders], now, due_at,
    )
    for r in rows:
        moves.add(r["name"], r["n"], r["fen"])


async def apply_entries(conn: Conn, entries: Sequence[EntryChange], now: datetime, due_at: datetime,
                        moves: Moves) -> None:
    rows = await conn.fetch(
        APPLY_ENTRIES_SQL,
        [e.entry_id for e in entries], [e.uid or None for e in entries], [e.kind for e in entries],
        [e.amount for e in entries], [e.order_id for e in entries], [e.reward_id for e in entries],
        [e.balance_after for e in entries], [e.created_at for e in entries], now, due_at,
    )
    for r in rows:
        moves.add(r["name"], r["n"], r["fen"])


async def apply_payouts(conn: Conn, payouts: Sequence[PayoutChange], now: datetime, due_at: datetime,
                        moves: Moves) -> None:
    fresh_cursors = {
        r["cursor"] for r in await conn.fetch(
            PAYOUT_EVENTS_SQL,
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
        APPLY_PAYOUTS_SQL,
        [k[0] for k in keys], [k[1] for k in keys], [v["uid"] for v in vals], [v["channel"] for v in vals],
        [v["amount"] for v in vals], [v["state"] for v in vals], [v["rank"] for v in vals],
        [v["reason"] for v in vals], [v["paid_count"] for v in vals], [v["paid_sum"] for v in vals],
        [v["created"] for v in vals], [v["updated"] for v in vals], due_at, TERMINAL_RANK, now,
    )
    # Only events not seen before were folded: the paid sum moves as r_payouts does.
    moves.add(Sum.PAID, sum(v["paid_count"] for v in vals), sum(v["paid_sum"] for v in vals))


async def add_moves(conn: Conn, moves: Moves) -> None:
    """Write a transaction's moves. Last in every transaction that has any: the r_totals
    rows are then held only until commit, and a transaction holding one waits for nothing,
    so they can neither deadlock nor queue the feeds behind one another for long."""
    rows = moves.rows()
    if rows:
        await conn.execute(ADD_MOVES_SQL, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
