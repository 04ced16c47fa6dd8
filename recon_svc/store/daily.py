"""The daily batch's queries over one day of the projections (set-based passes that read
the day's index ranges), and the stored reports."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from recon_svc.domain import TERMINAL_RANK
from recon_svc.records import DailyGroup, LedgerDay, StoredReport, UnbalancedAccount
from recon_svc.store.session import Db


class DailyQueries:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def orders(self, start: datetime, end: datetime, stuck_before: datetime) -> list[DailyGroup]:
        """One pass over the day's orders joined with their entries and payouts, grouped by
        state and channel: counts and sums, plus the ids of orders that are not plainly
        clean. `clean` here is strictly narrower than the domain rules (only the shapes
        that can have no finding), so every order with a finding is among `suspects`
        (tests/integration/test_recon_clean_order.py holds the two to that)."""
        rows = await self.db.fetch(DAILY_ORDERS_SQL, start, end, stuck_before)
        return [DailyGroup(r["state"], r["channel"], int(r["orders"]), int(r["amount_fen"]),
                           int(r["debit_fen"]), int(r["refund_fen"]), int(r["paid_fen"]),
                           list(r["suspects"])) for r in rows]

    async def orphans(self, start: datetime, end: datetime, applied_before: datetime) -> list[str]:
        rows = await self.db.fetch(
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

    async def ledger(self, start: datetime, end: datetime) -> LedgerDay:
        """Ledger sums of the day's entries."""
        row = await self.db.fetchrow(
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
        assert row is not None
        return LedgerDay(int(row["entries"]), int(row["credits"]), int(row["debits"]),
                         int(row["refunds"]), int(row["voids"]))

    async def unbalanced_accounts(self, start: datetime, end: datetime) -> list[UnbalancedAccount]:
        """Every account active that day whose balance after its last entry of the day is not
        what all its entries up to there add up to."""
        rows = await self.db.fetch(
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
        return [UnbalancedAccount(r["uid"], r["credits"], r["debits"], r["refunds"], r["balance"] or 0)
                for r in rows]

    async def save_report(self, day: date, orders: int, discrepancies: int, report: dict[str, Any],
                          text: str) -> StoredReport:
        """Store (or replace) a day's report; returns it as stored."""
        row = await self.db.fetchrow(
            """
            INSERT INTO daily_reports (date, orders, discrepancies, report, text)
            VALUES ($1, $2, $3, $4::jsonb, $5)
            ON CONFLICT (date) DO UPDATE SET orders = excluded.orders,
                discrepancies = excluded.discrepancies, report = excluded.report,
                text = excluded.text, created_at = now()
            RETURNING date, orders, discrepancies, report::text AS report, text, created_at
            """,
            day, orders, discrepancies, json.dumps(report), text,
        )
        assert row is not None
        return _report(row)

    async def report(self, day: date) -> StoredReport | None:
        row = await self.db.fetchrow(
            "SELECT date, orders, discrepancies, report::text AS report, text, created_at "
            "FROM daily_reports WHERE date = $1",
            day,
        )
        return None if row is None else _report(row)


def _report(row: Any) -> StoredReport:
    return StoredReport(row["date"], row["orders"], row["discrepancies"], row["report"], row["text"],
                        row["created_at"])


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

