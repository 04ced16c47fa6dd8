"""The daily batch's SQL pre-filter against the one definition of a clean order: every
planted case of tests/recon_cases.py is written into recon's projections, and the orders the
SQL lets through as plainly clean must be exactly those check_order finds nothing wrong with
(over the same rows, read back as the checker reads them); orphans likewise."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from meshkit.db import create_pool, migrate
from meshkit.timeconv import utcnow
from recon_svc.domain import ORDER_RANK, PAYOUT_RANK, EntryView, OrderView, PayoutView, check_order
from recon_svc.store.checks import CheckQueue
from recon_svc.store.daily import DailyQueries
from tests.recon_cases import CLEAN, ONE_FAULT

MIGRATIONS = Path(__file__).resolve().parents[2] / "recon_svc" / "migrations"
CASES = [*CLEAN, *((o, e, p) for o, e, p, _ in ONE_FAULT)]


@pytest.fixture(scope="module")
async def db(mesh_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    schema = f"recon_clean_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=3)
    try:
        await migrate(pool, schema, MIGRATIONS)
        yield pool
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


async def plant(db: asyncpg.Pool, order_id: str, order: OrderView | None, entries: list[EntryView],
                payouts: list[PayoutView], entry_ids: itertools.count[int]) -> None:
    at = utcnow() - timedelta(hours=1)
    if order is not None:
        await db.execute(
            "INSERT INTO r_orders (order_id, uid, amount, channel, state, state_rank, conflict_state,"
            " created_at, updated_at) VALUES ($1, $2, $3, 'bank', $4, $5, $6, $7, $7)",
            order_id, order.uid, order.amount, order.state, ORDER_RANK[order.state], order.conflict_state, at)
    for e in entries:
        await db.execute(
            "INSERT INTO r_entries (entry_id, uid, kind, amount, order_id, created_at, applied_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $6)",
            next(entry_ids), None if e.kind == "VOID" else 7, e.kind, e.amount, order_id, at)
    for n, p in enumerate(payouts):
        await db.execute(
            "INSERT INTO r_payouts (order_id, payout_ref, uid, amount, state, state_rank, paid_count,"
            " paid_sum, created_at, updated_at) VALUES ($1, $2, 7, $3, $4, $5, $6, $7, $8, $8)",
            order_id, p.ref or f"r{n}", p.amount, p.state, PAYOUT_RANK[p.state], p.paid_count, p.paid_sum, at)


async def test_the_daily_sql_lets_through_exactly_what_check_order_finds_clean(db: asyncpg.Pool) -> None:
    entry_ids = itertools.count(1)
    planted: dict[str, OrderView | None] = {}
    for i, (order, entries, payouts) in enumerate(CASES):
        order_id = f"case-{i}"
        if order is not None:
            order = OrderView(order_id, order.uid, order.amount, order.state, order.conflict_state)
        planted[order_id] = order
        await plant(db, order_id, order, entries, payouts, entry_ids)

    async with db.acquire() as conn, conn.transaction():
        facts = await CheckQueue(conn).facts(list(planted))
    unclean = {oid for oid, f in facts.items() if check_order(f.order, f.entries, f.payouts)}
    final = {oid for oid, o in planted.items() if o is not None and o.terminal}
    in_flight = {oid for oid, o in planted.items() if o is not None and not o.terminal}
    orphans = {oid for oid, o in planted.items() if o is None}
    # Not vacuous: clean and unclean cases of both kinds, and orders in flight.
    assert final & unclean and final - unclean and orphans & unclean and in_flight

    now = utcnow()
    daily = DailyQueries(db)
    start, end = now - timedelta(hours=2), now + timedelta(hours=1)
    young = {oid for g in await daily.orders(start, end, stuck_before=start) for oid in g.suspects}
    assert young == final & unclean
    # Orders still in flight once they count as stuck are suspects too (judged by age).
    old = {oid for g in await daily.orders(start, end, stuck_before=now) for oid in g.suspects}
    assert old == (final & unclean) | in_flight
    assert set(await daily.orphans(start, end, applied_before=now)) == orphans & unclean
