#!/usr/bin/env python3
"""Daily reconciliation over 1,000,000 synthetic orders, against the same join done as one
SQL query in the same run.

    .venv/bin/python -m bench.daily_recon [--orders 1000000] [--users 200000]
        [--keep]

Creates a scratch schema in DATABASE_URL's database (default local PostgreSQL), migrates
recon_svc's tables into it and fills its projections (r_orders, r_entries, r_payouts) with
one day of orders: 92 % SUCCEEDED (debit, successful payout), 6 % FAILED and refunded
(debit, refund, failed payout), 2 % FAILED before any debit (void). Every account gets one
credit first, and every entry carries a correct balance_after, so the ledger adds up. A few
faults are planted on purpose (a second debit on ~90 orders, a payout of a different amount
on ~90 others) and the run checks that the batch found exactly those.

Then, caches warmed by one untimed pass of the baseline:
  - the daily batch: recon_svc.daily.DailyRecon.run(date), exactly what RunDailyRecon runs
    (set-based aggregation and clean filter, domain rules on the remaining orders, orphans,
    per-account ledger conservation, payout totals, discrepancies stored, report written);
  - the baseline: one SQL statement joining the day's orders with their per-order entry
    and payout aggregates and returning the orders that are not plainly clean.

The data is loaded in chunks of accounts, each its own transaction: a long transaction
would hold back every change feed on this PostgreSQL server (they hide rows of
transactions younger than the oldest one running) and slow down a mesh running beside it.

Prints
    RESULT daily_recon_orders_per_s X
    RESULT daily_recon_vs_single_query R     (batch orders/s divided by baseline orders/s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from bench import pgstate
from meshkit.db import create_pool, migrate
from meshkit.settings import DEFAULT_DATABASE_URL

ROOT = Path(__file__).resolve().parent.parent

DAY = date(2026, 1, 15)
ZONE = ZoneInfo("Asia/Shanghai")
DAY_START = datetime.combine(DAY, clock(0), tzinfo=ZONE)
CREDIT_FEN = 100_000_000
DOUBLE_DEBIT_STEP = 10007   # prime: its multiples fall on distinct accounts
AMOUNT_MISMATCH_STEP = 10009

# One chunk of accounts [$1, $2) with all their orders (g = (uid - 1) + k * users).
LOAD_SQL = """
WITH od AS (
    SELECT g, uid, 'o' || g AS order_id, (100 + (g * 7919) % 9900)::bigint AS amount,
           (ARRAY['bank', 'alipay', 'balance'])[1 + g % 3] AS channel,
           CASE WHEN g % 100 < 92 THEN 'S' WHEN g % 100 < 98 THEN 'R' ELSE 'V' END AS fate,
           $4::timestamptz + (g::float8 * 86000 / $5::float8) * interval '1 second' AS created_at
    FROM (SELECT (u - 1) + k * $3::bigint AS g, u AS uid
          FROM generate_series($1::bigint, $2::bigint - 1) u,
               generate_series(0, ceil($5::float8 / $3::float8)::int - 1) k) x
    WHERE g < $5::bigint),
ins_orders AS (
    INSERT INTO r_orders (order_id, uid, amount, channel, state, state_rank, created_at, updated_at,
                          terminal_at, seen_terminal_at, checked_at, verdict, settled_fen, settled_paid)
    SELECT order_id, uid, amount, channel, CASE fate WHEN 'S' THEN 'SUCCEEDED' ELSE 'FAILED' END, 3,
           created_at, created_at + interval '2 s', created_at + interval '2 s',
           created_at + interval '2 s', created_at + interval '4 s', 'ok',
           CASE fate WHEN 'S' THEN amount ELSE 0 END, CASE fate WHEN 'S' THEN amount ELSE 0 END
    FROM od),
ins_payouts AS (
    INSERT INTO r_payouts (order_id, payout_ref, uid, channel, amount, state, state_rank, paid_count,
                           paid_sum, created_at, updated_at)
    SELECT order_id, '', uid, channel, amount, CASE fate WHEN 'S' THEN 'SUCCEEDED' ELSE 'FAILED' END, 2,
           CASE fate WHEN 'S' THEN 1 ELSE 0 END, CASE fate WHEN 'S' THEN amount ELSE 0 END,
           created_at + interval '1 s', created_at + interval '1 s'
    FROM od WHERE fate IN ('S', 'R')),
ev AS (
    SELECT u AS uid, u AS entry_id, 'CREDIT' AS kind, $6::bigint AS amount, '' AS order_id,
           'r' || u AS reward_id, $4::timestamptz AS created_at
    FROM generate_series($1::bigint, $2::bigint - 1) u
    UNION ALL
    SELECT uid, $3::bigint + 1 + 2 * g, 'DEBIT', amount, order_id, '', created_at FROM od WHERE fate <> 'V'
    UNION ALL
    SELECT uid, $3::bigint + 2 + 2 * g, 'REFUND', amount, order_id, '', created_at + interval '3 s'
    FROM od WHERE fate = 'R'
    UNION ALL
    SELECT NULL, $3::bigint + 1 + 2 * g, 'VOID', 0, order_id, '', created_at + interval '3 s'
    FROM od WHERE fate = 'V')
INSERT INTO r_entries (entry_id, uid, kind, amount, order_id, reward_id, balance_after, created_at)
SELECT entry_id, uid, kind, amount, order_id, reward_id,
       CASE WHEN uid IS NOT NULL THEN
           sum(CASE kind WHEN 'DEBIT' THEN -amount ELSE amount END)
               OVER (PARTITION BY uid ORDER BY entry_id) END,
       created_at
FROM ev
"""

# Faults: a second debit (the account's latest entry, balance kept consistent) on SUCCEEDED
# orders, and a payout of one fen more on others.
FAULTS_SQL = [
    """
    INSERT INTO r_entries (entry_id, uid, kind, amount, order_id, reward_id, balance_after, created_at)
    SELECT 1000000000000 + o.g, o.uid, 'DEBIT', o.amount, o.order_id, '',
           (SELECT balance_after FROM r_entries l WHERE l.uid = o.uid ORDER BY entry_id DESC LIMIT 1)
               - o.amount,
           o.created_at + interval '5 s'
    FROM (SELECT substr(order_id, 2)::bigint AS g, uid, amount, order_id, created_at FROM r_orders
          WHERE state = 'SUCCEEDED' AND substr(order_id, 2)::bigint % $1 = 0) o
    """,
    """
    UPDATE r_payouts SET amount = amount + 1, paid_sum = paid_sum + 1
    WHERE state = 'SUCCEEDED' AND substr(order_id, 2)::bigint % $1 = 1
    """,
]

# The baseline: the same join as one statement, returning the orders not plainly clean.
BASELINE_SQL = """
WITH o AS (
    SELECT order_id, amount, state, state_rank, conflict_state, created_at
    FROM r_orders WHERE created_at >= $1 AND created_at < $2),
e AS (
    SELECT e.order_id,
           count(*) FILTER (WHERE e.kind = 'DEBIT') AS debits,
           count(*) FILTER (WHERE e.kind = 'REFUND') AS refunds,
           bool_and(e.amount = o.amount) FILTER (WHERE e.kind IN ('DEBIT', 'REFUND')) AS amounts_ok
    FROM r_entries e JOIN o ON o.order_id = e.order_id GROUP BY e.order_id),
p AS (
    SELECT p.order_id, coalesce(sum(p.paid_count), 0) AS paid,
           count(*) FILTER (WHERE p.state NOT IN ('SUCCEEDED', 'FAILED')) AS in_flight,
           coalesce(sum(p.paid_sum), 0) AS paid_fen
    FROM r_payouts p JOIN o ON o.order_id = p.order_id GROUP BY p.order_id)
SELECT o.order_id, o.state, coalesce(e.debits, 0) AS debits, coalesce(e.refunds, 0) AS refunds,
       coalesce(p.paid, 0) AS paid, coalesce(p.paid_fen, 0) AS paid_fen
FROM o LEFT JOIN e ON e.order_id = o.order_id LEFT JOIN p ON p.order_id = o.order_id
WHERE NOT CASE
    WHEN o.state_rank < 3 THEN o.created_at >= $3
    WHEN o.conflict_state <> '' THEN false
    WHEN o.state = 'SUCCEEDED' THEN coalesce(e.debits, 0) = 1 AND coalesce(e.refunds, 0) = 0
         AND coalesce(p.paid, 0) = 1 AND coalesce(p.in_flight, 0) = 0
         AND coalesce(e.amounts_ok, true) AND coalesce(p.paid_fen, 0) = o.amount
    WHEN o.state = 'FAILED' THEN coalesce(p.paid, 0) = 0 AND coalesce(p.in_flight, 0) = 0 AND (
         (coalesce(e.debits, 0) = 0 AND coalesce(e.refunds, 0) = 0)
         OR (coalesce(e.debits, 0) = 1 AND coalesce(e.refunds, 0) = 1 AND coalesce(e.amounts_ok, true)))
    ELSE false END
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def load(pool: asyncpg.Pool, orders: int, users: int) -> None:
    start = time.monotonic()
    chunk = max(1, min(users, 20_000))
    for u0 in range(1, users + 1, chunk):
        u1 = min(users + 1, u0 + chunk)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(LOAD_SQL, u0, u1, users, DAY_START, orders, CREDIT_FEN)
        log(f"  loaded accounts {u0}..{u1 - 1} ({time.monotonic() - start:.0f}s)")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(FAULTS_SQL[0], DOUBLE_DEBIT_STEP)
        await conn.execute(FAULTS_SQL[1], AMOUNT_MISMATCH_STEP)
    await pool.execute("ANALYZE r_orders")
    await pool.execute("ANALYZE r_entries")
    await pool.execute("ANALYZE r_payouts")
    log(f"loaded {orders} orders in {time.monotonic() - start:.1f}s")


async def expected_faults(pool: asyncpg.Pool) -> dict[str, int]:
    doubles = await pool.fetchval(
        "SELECT count(*) FROM r_orders WHERE state = 'SUCCEEDED' AND substr(order_id, 2)::bigint % $1 = 0",
        DOUBLE_DEBIT_STEP)
    mismatches = await pool.fetchval(
        "SELECT count(*) FROM r_payouts WHERE state = 'SUCCEEDED' AND substr(order_id, 2)::bigint % $1 = 1",
        AMOUNT_MISMATCH_STEP)
    return {"double_debit": int(doubles), "amount_mismatch": int(mismatches)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch schema")
    args = parser.parse_args()

    dsn = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    schema = f"recon_bench_{uuid.uuid4().hex[:8]}"
    os.environ["RECON_SVC_DB_SCHEMA"] = schema
    os.environ.setdefault("RECON_TIMEZONE", ZONE.key)
    # Imported after the environment is set: Settings are read from it.
    from recon_svc.alerts import Alerts
    from recon_svc.daily import DailyRecon
    from recon_svc.settings import Settings
    from recon_svc.store.unit_of_work import PgStore

    pool = await create_pool(dsn, schema, min_size=2, max_size=4)
    try:
        await migrate(pool, schema, ROOT / "recon_svc" / "migrations")
        log(f"scratch schema {schema}: loading {args.orders} orders over {args.users} accounts")
        await load(pool, args.orders, args.users)
        want = await expected_faults(pool)
        await pgstate.prepare(dsn, [schema], say=log)

        settings = Settings.from_env()
        daily = DailyRecon(PgStore(pool), settings, Alerts("", 1.0))
        start, end = DAY_START, DAY_START + timedelta(days=1)
        stuck_before = start  # every order is final: nothing can count as stuck

        # Warm the caches (both runs read the same pages) with one untimed baseline pass.
        await pool.fetch(BASELINE_SQL, start, end, stuck_before)

        t0 = time.perf_counter()
        report = await daily.run(DAY.isoformat())
        daily_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = await pool.fetch(BASELINE_SQL, start, end, stuck_before)
        baseline_s = time.perf_counter() - t0

        body = json.loads(report.report_json)
        got = body["discrepancy_counts"]
        log(f"daily batch: {report.orders} orders in {daily_s:.2f}s; discrepancies {got}; expected {want}")
        log(f"daily batch phases (ms): {body['timings_ms']}")
        log(f"baseline single query: {len(rows)} suspect orders in {baseline_s:.2f}s")
        if report.orders != args.orders or got != {k: v for k, v in want.items() if v}:
            log("MISMATCH: the batch did not find exactly the planted faults")
            sys.exit(1)
        if len(rows) != sum(want.values()):
            log("MISMATCH: the baseline did not return exactly the planted orders")
            sys.exit(1)
        daily_rate = args.orders / daily_s
        baseline_rate = args.orders / baseline_s
        log(f"baseline: {baseline_rate:,.0f} orders/s")
        print(f"RESULT daily_recon_orders_per_s {daily_rate:.0f}")
        print(f"RESULT daily_recon_vs_single_query {daily_rate / baseline_rate:.2f}")
    finally:
        if not args.keep:
            await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
