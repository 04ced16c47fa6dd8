"""recon's periodic work at a cost that does not grow with history, on a projection schema
of its own: 30,000 settled orders with their entries, payouts and balances, bulk-loaded and
never analyzed (autovacuum off on every table), as on a server where statistics went stale.

Every statement that the feed follower, the checker, the self-checker and the auditor run
is planned by PostgreSQL as it runs (EXPLAIN with the same parameters, on the same
connection and transaction): a large table may only be read through an index condition
(a key or a range), never scanned whole, and no plan may be costly enough to be JIT
compiled. The self-check asks account_svc and the gateway once per batch, and the running
sums still equal a full recount after all of it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from meshkit.db import create_pool, migrate
from meshkit.timeconv import utcnow
from recon_svc.alerts import Alerts
from recon_svc.domain import SUCCEEDED, EntryView, OrderView, PayoutView
from recon_svc.peers import FeedChange
from recon_svc.service import ReconService
from recon_svc.settings import Settings
from recon_svc.store.unit_of_work import PgStore
from tests.harness import patched_env

ORDERS = 30_000
ACCOUNTS = 6_000
CREDIT_FEN = 10_000_000
DUE_CHECKS = 200
SELF_CHECKS = 300
STUCK = 50
PAGE = 100
MIGRATIONS = Path(__file__).resolve().parents[2] / "recon_svc" / "migrations"
# Tables whose size follows the history; r_checks, feed_positions and r_totals stay small.
# r_checks is a queue, but with autovacuum off its dead rows pile up with history too.
LARGE = {"r_orders", "r_entries", "r_payouts", "r_payout_events", "r_balances", "discrepancies", "r_checks"}
TABLES = [*LARGE, "r_totals", "feed_positions", "daily_reports"]
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan",
         "Tid Scan", "Sample Scan"}

# Orders o<g>: 'S' SUCCEEDED (debit, paid), 'R' FAILED and refunded, 'V' FAILED, voided.
LOAD_SQL = """
WITH o AS (
    SELECT g, 'o' || g AS order_id, 1 + g % $2 AS uid, (100 + g % 900)::bigint AS amount,
           CASE WHEN g % 50 = 0 THEN 'V' WHEN g % 10 = 1 THEN 'R' ELSE 'S' END AS fate,
           now() - interval '1 day' + g * interval '1 ms' AS at
    FROM generate_series(0, $1 - 1) g),
ins_orders AS (
    INSERT INTO r_orders (order_id, uid, amount, channel, state, state_rank, created_at, updated_at,
                          terminal_at, seen_terminal_at, checked_at, verdict, settled_fen, settled_paid)
    SELECT order_id, uid, amount, 'bank', CASE fate WHEN 'S' THEN 'SUCCEEDED' ELSE 'FAILED' END, 3,
           at, at, at, at, at, 'ok', CASE fate WHEN 'S' THEN amount ELSE 0 END,
           CASE fate WHEN 'S' THEN amount ELSE 0 END
    FROM o),
ins_payouts AS (
    INSERT INTO r_payouts (order_id, payout_ref, uid, channel, amount, state, state_rank, paid_count,
                           paid_sum, created_at, updated_at)
    SELECT order_id, '', uid, 'bank', amount, CASE fate WHEN 'S' THEN 'SUCCEEDED' ELSE 'FAILED' END, 2,
           CASE fate WHEN 'S' THEN 1 ELSE 0 END, CASE fate WHEN 'S' THEN amount ELSE 0 END, at, at
    FROM o WHERE fate <> 'V'),
ev AS (
    SELECT u AS uid, u AS entry_id, 'CREDIT' AS kind, $3::bigint AS amount, '' AS order_id,
           'r' || u AS reward_id, now() - interval '2 days' AS at
    FROM generate_series(1, $2) u
    UNION ALL
    SELECT uid, $2 + 1 + 2 * g, 'DEBIT', amount, order_id, '', at FROM o WHERE fate <> 'V'
    UNION ALL
    SELECT uid, $2 + 2 + 2 * g, 'REFUND', amount, order_id, '', at FROM o WHERE fate = 'R'
    UNION ALL
    SELECT NULL, $2 + 1 + 2 * g, 'VOID', 0, order_id, '', at FROM o WHERE fate = 'V')
INSERT INTO r_entries (entry_id, uid, kind, amount, order_id, reward_id, balance_after, created_at)
SELECT entry_id, uid, kind, amount, order_id, reward_id,
       CASE WHEN uid IS NOT NULL THEN
           sum(CASE kind WHEN 'DEBIT' THEN -amount ELSE amount END)
               OVER (PARTITION BY uid ORDER BY entry_id) END,
       at
FROM ev
"""

BALANCES_SQL = """
INSERT INTO r_balances (uid, credits, debits, refunds, balance, last_entry_id)
SELECT uid, coalesce(sum(amount) FILTER (WHERE kind = 'CREDIT'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'DEBIT'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
       (array_agg(balance_after ORDER BY entry_id DESC))[1], max(entry_id)
FROM r_entries WHERE uid IS NOT NULL GROUP BY uid
"""


class ExplainingConnection(asyncpg.Connection):  # type: ignore[misc]
    """Plans every statement before running it, on the same connection (so in the same
    transaction, with the same settings) and with the same parameters."""

    plans: list[tuple[str, dict[str, Any]]]

    async def _explain(self, query: str, args: tuple[Any, ...]) -> None:
        first = query.lstrip().split(None, 1)[0].upper()
        # (Scripts of several statements, such as asyncpg's reset on release, are not plans.)
        if first in ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE") and ";" not in query:
            text = await super().fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
            type(self).plans.append((query, json.loads(text)[0]))

    async def fetch(self, query: str, *args: Any, **kw: Any) -> Any:
        await self._explain(query, args)
        return await super().fetch(query, *args, **kw)

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> Any:
        await self._explain(query, args)
        return await super().fetchrow(query, *args, **kw)

    async def fetchval(self, query: str, *args: Any, **kw: Any) -> Any:
        await self._explain(query, args)
        return await super().fetchval(query, *args, **kw)

    async def execute(self, query: str, *args: Any, **kw: Any) -> Any:
        await self._explain(query, args)
        return await super().execute(query, *args, **kw)


def offences(plan: dict[str, Any]) -> list[str]:
    """What in one EXPLAIN output reads a large table other than through an index condition,
    or would be JIT compiled."""
    found = [f"JIT compiled (total cost {plan['Plan']['Total Cost']:.0f})"] if "JIT" in plan else []

    def walk(node: dict[str, Any], parent: str) -> None:
        kind = node["Node Type"]
        if kind in SCANS and node.get("Relation Name") in LARGE:
            # An index read in its order under a LIMIT stops at the first rows it returns.
            bounded = (kind == "Bitmap Heap Scan" and "Recheck Cond" in node) or (
                kind in ("Index Scan", "Index Only Scan") and ("Index Cond" in node or parent == "Limit"))
            if not bounded:
                found.append(f"{kind} on {node['Relation Name']} ({node.get('Index Name', 'no index')}, "
                             f"{node.get('Filter', 'no condition')})")
        for child in node.get("Plans", []):
            walk(child, kind)

    walk(plan["Plan"], "")
    return found


@dataclass
class FakeLedger:
    """account_svc's query RPCs, answered from the scratch projections; counts calls."""

    db: asyncpg.Pool
    single_calls: int = 0
    batches: list[list[str]] = field(default_factory=list)

    async def order_entries(self, order_id: str) -> list[EntryView]:
        self.single_calls += 1
        return (await self.orders_entries([order_id], count=False))[order_id]

    async def orders_entries(self, order_ids: list[str], count: bool = True) -> dict[str, list[EntryView]]:
        if count:
            self.batches.append(list(order_ids))
        rows = await self.db.fetch("SELECT order_id, kind, amount, entry_id FROM r_entries"
                                   " WHERE order_id = ANY($1) ORDER BY entry_id", order_ids)
        out: dict[str, list[EntryView]] = {i: [] for i in order_ids}
        for r in rows:
            out[r["order_id"]].append(EntryView(r["kind"], r["amount"], r["entry_id"]))
        return out


@dataclass
class FakeGateway:
    """The gateway's query RPCs from the scratch projections, except `lost`: an order whose
    payout the gateway does not know (a planted fault for the self-check)."""

    db: asyncpg.Pool
    lost: str
    single_calls: int = 0
    batches: list[list[str]] = field(default_factory=list)

    async def query_payout(self, order_id: str) -> PayoutView | None:
        self.single_calls += 1
        return (await self.query_payouts([order_id], count=False)).get(order_id)

    async def query_payouts(self, order_ids: list[str], count: bool = True) -> dict[str, PayoutView]:
        if count:
            self.batches.append(list(order_ids))
        rows = await self.db.fetch("SELECT order_id, state, amount FROM r_payouts WHERE order_id = ANY($1)",
                                   order_ids)
        return {r["order_id"]: PayoutView.queried(r["state"], r["amount"]) for r in rows
                if r["order_id"] != self.lost}


class NoOrders:
    async def get_order(self, order_id: str) -> tuple[OrderView, datetime | None] | None:
        raise AssertionError("no periodic path asks withdraw_svc")


@dataclass
class Scratch:
    db: asyncpg.Pool           # plain connections, for set-up and oracles
    explained: asyncpg.Pool    # the service's connections
    service: ReconService
    ledger: FakeLedger
    gateway: FakeGateway


@pytest.fixture(scope="module")
async def scratch(mesh_env: dict[str, str]) -> AsyncIterator[Scratch]:
    dsn = mesh_env["DATABASE_URL"]
    schema = f"recon_periodic_{uuid.uuid4().hex[:8]}"
    db = await create_pool(dsn, schema, min_size=1, max_size=2)
    try:
        await migrate(db, schema, MIGRATIONS)
        for table in TABLES:
            await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        async with db.acquire() as conn, conn.transaction():
            await conn.execute(LOAD_SQL, ORDERS, ACCOUNTS, CREDIT_FEN)
            await conn.execute(BALANCES_SQL)
            # Work for every periodic path: checks due, self-checks due, stuck orders.
            await conn.execute("INSERT INTO r_checks (order_id, due_at) SELECT 'o' || g,"
                               " now() - interval '1 s' FROM generate_series(1, $1 * 7, 7) g", DUE_CHECKS)
            await conn.execute("UPDATE r_orders SET self_check_due_at = now() - interval '1 s'"
                               " WHERE order_id = ANY($1)", [f"o{g}" for g in range(3, SELF_CHECKS * 11, 11)])
            await conn.execute(
                "INSERT INTO r_orders (order_id, uid, amount, state, state_rank, created_at, updated_at)"
                " SELECT 'x' || g, 1, 100, 'PAYING', 2, now() - interval '1 day', now() - interval '1 day'"
                " FROM generate_series(1, $1) g", STUCK)
            # As recon would have summed them while applying all of it.
            await conn.execute("INSERT INTO r_totals SELECT * FROM r_totals_recount ON CONFLICT (name)"
                               " DO UPDATE SET count = excluded.count, fen = excluded.fen")
        ExplainingConnection.plans = []
        explained = await asyncpg.create_pool(dsn, min_size=1, max_size=4,
                                              connection_class=ExplainingConnection,
                                              server_settings={"search_path": schema})
        # RECON_SELF_CHECK off: the verdicts queue no self-checks beyond the seeded ones.
        env = {"RECON_SVC_DB_SCHEMA": schema, "RECON_GRACE_S": "0", "RECON_REFUND_GRACE_S": "0",
               "RECON_SELF_CHECK": "false",
               "RECON_STUCK_AFTER_S": "600", "RECON_SELF_CHECK_BATCH": "500", "RECON_CHECK_BATCH": "500"}
        with patched_env(env):
            settings = Settings.from_env()
        ledger = FakeLedger(db)
        gateway = FakeGateway(db, lost=await db.fetchval(
            "SELECT order_id FROM r_orders WHERE self_check_due_at IS NOT NULL AND state = $1 LIMIT 1",
            SUCCEEDED))
        service = ReconService(PgStore(explained), settings, Alerts("", 1.0), ledger, gateway, NoOrders())
        try:
            yield Scratch(db, explained, service, ledger, gateway)
        finally:
            await explained.close()
    finally:
        await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await db.close()


def order_change(i: int, order_id: str, uid: int, amount: int, state: str, at: datetime) -> FeedChange:
    return FeedChange(f"1:{i}", "order", order_id, {
        "order_id": order_id, "uid": uid, "amount_fen": amount, "channel": "bank", "state": state,
        "created_at": at.isoformat(), "updated_at": at.isoformat()}, at)


def entry_change(i: int, entry_id: int, uid: int | None, kind: str, amount: int, order_id: str,
                 balance_after: int | None, at: datetime) -> FeedChange:
    return FeedChange(f"1:{i}", "entry", order_id, {
        "entry_id": entry_id, "uid": uid, "kind": kind, "amount_fen": amount, "order_id": order_id,
        "balance_after_fen": balance_after, "created_at": at.isoformat()}, at)


async def apply_pages(s: Scratch) -> None:
    """One page per feed as the follower applies it: new orders that settle within the page,
    and changes recon already has (replays)."""
    now = utcnow()
    svc = s.service
    await svc.store.autocommit.feeds.ensure(["account", "withdraw", "gateway"])
    old = await s.db.fetch("SELECT order_id, uid, amount, state FROM r_orders WHERE order_id LIKE 'o%'"
                           " ORDER BY order_id LIMIT $1", PAGE)
    fresh = [(f"n{uuid.uuid4().hex[:12]}", 1 + i, 100 + i) for i in range(PAGE)]
    orders = [order_change(i, oid, uid, amt, st, now) for i, (oid, uid, amt) in enumerate(fresh)
              for st in ("PENDING_DEDUCT", "PENDING_PAYOUT", "PAYING", "SUCCEEDED")]
    orders += [order_change(PAGE * 4 + i, r["order_id"], r["uid"], r["amount"], r["state"], now)
               for i, r in enumerate(old)]
    assert await svc.apply_page("withdraw", "", orders, "1:9999")

    entries = await s.db.fetch("SELECT * FROM r_entries WHERE kind = 'DEBIT' ORDER BY entry_id LIMIT $1",
                               PAGE)
    balances = {r["uid"]: r["balance"] for r in await s.db.fetch("SELECT uid, balance FROM r_balances")}
    base = 10 * (ORDERS + ACCOUNTS)
    changes = [entry_change(i, base + i, uid, "DEBIT", amt, oid, balances[uid] - amt, now)
               for i, (oid, uid, amt) in enumerate(fresh)]
    changes += [entry_change(PAGE + i, r["entry_id"], r["uid"], r["kind"], r["amount"], r["order_id"],
                             r["balance_after"], now) for i, r in enumerate(entries)]
    assert await svc.apply_page("account", "", changes, "1:9999")

    payouts = [FeedChange(f"1:{i}", "payout", oid, {"order_id": oid, "uid": uid, "channel": "bank",
                                                    "amount_fen": amt, "state": "SUCCEEDED"}, now)
               for i, (oid, uid, amt) in enumerate(fresh)]
    assert await svc.apply_page("gateway", "", payouts, "1:9999")


async def test_every_periodic_statement_reads_large_tables_only_through_an_index(scratch: Scratch) -> None:
    s = scratch
    await apply_pages(s)
    for feed in ("account", "withdraw", "gateway"):
        s.service.heads.reached(feed, utcnow() + timedelta(seconds=1))
    await s.service.run_checks()
    assert await s.db.fetchval("SELECT count(*) FROM r_checks") == 0, "every due order was judged"
    await s.service.run_checks()  # nothing due now: the checker only looks for the next one
    claimed = await s.service.run_self_checks()
    assert claimed == SELF_CHECKS
    await s.service.audit()

    plans = ExplainingConnection.plans
    touched = {n.get("Relation Name") for _, p in plans for n in _nodes(p["Plan"])}
    # Not vacuous: the checker's, the feed pages' and the audit's reads were all planned.
    assert {"r_orders", "r_entries", "r_payouts", "r_balances", "r_checks", "r_totals"} <= touched
    bad = [f"{sql.strip().splitlines()[0][:90]}: {o}" for sql, p in plans for o in offences(p)]
    assert bad == [], "\n".join(bad)


async def test_self_check_asks_each_peer_once_per_batch(scratch: Scratch) -> None:
    s = scratch
    assert (s.ledger.single_calls, s.gateway.single_calls) == (0, 0)
    assert len(s.ledger.batches) == len(s.gateway.batches) == 1
    assert len(s.ledger.batches[0]) == len(set(s.ledger.batches[0])) == SELF_CHECKS
    assert s.gateway.batches == s.ledger.batches
    left = await s.db.fetchval("SELECT count(*) FROM r_orders WHERE self_check_due_at IS NOT NULL")
    done = await s.db.fetchval("SELECT count(*) FROM r_orders WHERE self_checked_at IS NOT NULL")
    assert (left, done) == (0, SELF_CHECKS)
    found = await s.db.fetch("SELECT reason, order_id FROM discrepancies WHERE source = 'self_check'")
    assert [(r["reason"], r["order_id"]) for r in found] == [("state_mismatch", s.gateway.lost)]


async def test_running_sums_still_equal_a_full_recount(scratch: Scratch) -> None:
    assert await scratch.service.verify_sums() == []
    sums = await scratch.service.store.autocommit.sums.current()
    assert sums["order"].count == ORDERS + STUCK + PAGE
    assert sums["succeeded"].count == ORDERS - ORDERS // 50 - ORDERS // 10 + PAGE
    stuck = await scratch.db.fetchval("SELECT count(*) FROM discrepancies WHERE reason = 'stuck_order'")
    assert stuck == STUCK
    assert await scratch.db.fetchval("SELECT count(*) FROM discrepancies WHERE subject = 'payouts'") == 0


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]
