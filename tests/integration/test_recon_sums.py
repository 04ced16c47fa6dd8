"""recon's running sums against the real feed servicer: after a mix of legitimate orders,
planted faults and replays (every change of two feeds appended a second time, then every
feed read again from its start), each running sum equals a full recount of the
projections, and the replays moved none of them. The settled sums are what the audit
checks conservation with; and a schema that already held projections starts its sums
from them."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from mesh.recon.v1 import recon_pb2
from meshkit.db import create_pool, migrate
from meshkit.server import RunningServer
from recon_svc.store.sums import running_and_recount
from recon_svc.sums import Sum, Sums, differences
from tests.harness import create_database, drop_database, new_id, new_uid, start_service
from tests.integration.recon_support import FEED_SCHEMAS, FeedServer, Recon, Writer, open_feed_server
from tests.waiting import eventually

MIGRATIONS = Path(__file__).resolve().parents[2] / "recon_svc" / "migrations"


@dataclass
class World:
    writer: Writer
    recon: Recon
    running: RunningServer
    feeds: dict[str, FeedServer]
    db: asyncpg.Pool     # the recon schema
    env: dict[str, str]

    async def replay_from_the_start(self) -> None:
        """As after a crash that lost every stored feed position."""
        await self.recon.close()
        await self.running.stop(0.5)
        await self.db.execute("UPDATE feed_positions SET cursor = ''")
        self.running = await start_service("recon_svc", self.env)
        self.recon = Recon(self.running.address)

    async def feed_ends(self) -> dict[str, str]:
        ends = {}
        for name, feed in self.feeds.items():
            ends[name] = await feed.pool.fetchval(
                "SELECT xid::text || ':' || id FROM changes ORDER BY xid DESC, id DESC LIMIT 1")
        return ends

    async def settle(self) -> None:
        """Until recon has read every feed to its end and judged everything due."""
        ends = await self.feed_ends()

        async def state() -> tuple[dict[str, str], int]:
            rows = await self.db.fetch("SELECT feed, cursor FROM feed_positions")
            pending = await self.db.fetchval("SELECT count(*) FROM r_checks")
            return {r["feed"]: r["cursor"] for r in rows}, pending

        got = await eventually(state, lambda s: s == (ends, 0), timeout=15.0)
        assert got == (ends, 0)

    async def sums(self) -> tuple[Sums, Sums]:
        both = await running_and_recount(self.db)
        return both.running, both.recount


@pytest.fixture(scope="module")
async def world(mesh_env: dict[str, str]) -> AsyncIterator[World]:
    base = mesh_env["DATABASE_URL"]
    dsn = await create_database(base)
    feeds = {name: await open_feed_server(dsn, schema) for name, schema in FEED_SCHEMAS.items()}
    env = {
        "DATABASE_URL": dsn,
        "ACCOUNT_SVC_ADDR": feeds["account"].address,
        "WITHDRAW_SVC_ADDR": feeds["withdraw"].address,
        "GATEWAY_MOCK_ADDR": feeds["gateway"].address,
        "RECON_GRACE_S": "0.3", "RECON_REFUND_GRACE_S": "0.5", "RECON_POLL_MS": "50", "RECON_CHECK_MS": "50",
        "RECON_SELF_CHECK": "false", "RECON_STUCK_AFTER_S": "600", "RECON_AUDIT_S": "0.2",
        "RECON_DB_POOL_SIZE": "3", "RECON_PAGE_SIZE": "7",  # small pages: many transactions
    }
    running = await start_service("recon_svc", env)
    db = await create_pool(dsn, "recon", min_size=1, max_size=2)
    world = World(Writer(feeds), Recon(running.address), running, feeds, db, env)
    try:
        yield world
    finally:
        await world.recon.close()
        await world.running.stop(0.5)
        await db.close()
        for feed in feeds.values():
            await feed.stop()
            await feed.pool.close()
        await drop_database(base, dsn)


async def test_running_sums_equal_a_full_recount_after_events_and_replays(world: World) -> None:
    w = world.writer
    succeeded = [await w.succeeded(100 + i) for i in range(6)]
    refunded = [await w.failed_refunded(200 + i) for i in range(4)]
    voided = [await w.failed_voided(300 + i) for i in range(3)]
    await w.start_order(400)                                   # in flight
    oid, uid = await w.succeeded(500)
    await w.entry("DEBIT", uid, 500, order_id=oid)             # double debit
    oid, uid = await w.succeeded(600)
    await w.payout(oid, uid, 600, "SUCCEEDED")                 # double payout
    await w.entry("DEBIT", await w.funded_user(), 700, order_id=new_id("ghost"))
    await w.payout(new_id("ghost"), new_uid(), 800, "SUCCEEDED")
    breach = new_uid()
    await w.entry("CREDIT", breach, 1000, reward_id=new_id("r"))
    await w.entry("CREDIT", breach, 300, reward_id=new_id("r"), balance_after=1800)
    await world.settle()
    oid, uid = refunded[0]
    await w.entry("REFUND", uid, 200, order_id=oid)            # a second refund, after the verdict
    await world.settle()

    running, recount = await world.sums()
    assert differences(running, recount) == []
    assert running[Sum.SUCCEEDED] == recount[Sum.SUCCEEDED]
    assert running[Sum.SUCCEEDED].count == len(succeeded) + 2
    assert running[Sum.FAILED].count == len(refunded) + len(voided)
    assert running[Sum.PAID].count == len(succeeded) + 2 + 1 + 1  # incl. the second payout and the ghost
    assert running[Sum.JUDGED].count == len(succeeded) + len(refunded) + len(voided) + 2
    # Judged ok: all but the double debit, the double payout and the double refund.
    assert running[Sum.SETTLED].count == len(succeeded) + len(refunded) + len(voided) - 1
    assert running[Sum.SETTLED].fen == running[Sum.SETTLED_PAID].fen == sum(range(100, 106))
    status = await world.recon.stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
    assert (status.credits_fen, status.debits_fen, status.refunds_fen, status.balances_fen) == (
        recount[Sum.CREDIT].fen, recount[Sum.DEBIT].fen, recount[Sum.REFUND].fen, recount[Sum.BALANCE].fen)
    assert status.balances_fen - (status.credits_fen - status.debits_fen + status.refunds_fen) == 500
    assert (status.gateway_succeeded_fen, status.orders_succeeded_fen, status.checked_orders) == (
        recount[Sum.PAID].fen, recount[Sum.SUCCEEDED].fen, recount[Sum.JUDGED].count)

    # Replays: every order and entry change appended to its feed once more (what a peer
    # republishing its feed would do), then every feed read again from the start.
    for feed in ("withdraw", "account"):
        await world.feeds[feed].pool.execute(
            "INSERT INTO changes (kind, key, payload)"
            " SELECT kind, key, payload FROM changes ORDER BY xid, id")
    await world.settle()
    await world.replay_from_the_start()
    await world.settle()
    again, recount_again = await world.sums()
    assert again == running
    assert recount_again == recount
    subjects = {d.subject for d in await world.recon.found()}
    assert "payouts" not in subjects


async def test_the_audit_reports_settled_sums_that_do_not_add_up(world: World) -> None:
    # As if a verdict had judged ok an order whose payout the sums say differs by 7 fen.
    await world.db.execute("UPDATE r_totals SET fen = fen + 7 WHERE name = 'settled_paid'")
    running, recount = await world.sums()
    assert differences(running, recount) == [
        f"settled_paid: running {running[Sum.SETTLED_PAID].count} / {running[Sum.SETTLED_PAID].fen} fen, "
        f"recount {recount[Sum.SETTLED_PAID].count} / {recount[Sum.SETTLED_PAID].fen} fen"]

    async def found() -> list[recon_pb2.Discrepancy]:
        return [d for d in await world.recon.found(reason="conservation") if d.subject == "payouts"]

    [hit] = await eventually(found, bool, timeout=5.0)
    settled = running[Sum.SETTLED]
    assert hit.detail == (f"over {settled.count} judged orders: succeeded orders {settled.fen} fen, "
                          f"gateway paid {settled.fen + 7} fen")


async def test_a_schema_with_projections_starts_its_sums_from_them(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    # The migrations before the running sums, under the same names (recon_svc/NNN_...).
    before = tmp_path / "recon_svc" / "migrations"
    before.mkdir(parents=True)
    for name in ("001_recon.sql", "002_confirm.sql"):
        shutil.copy(MIGRATIONS / name, before / name)
    schema = f"recon_upgrade_{uuid.uuid4().hex[:8]}"
    db = await create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=1)
    try:
        await migrate(db, schema, before)
        await db.execute("""
            INSERT INTO r_orders (order_id, uid, amount, state, state_rank, created_at, updated_at, verdict)
            VALUES ('a', 1, 500, 'SUCCEEDED', 3, now(), now(), 'ok'),
                   ('b', 1, 300, 'FAILED', 3, now(), now(), 'ok'),
                   ('c', 2, 700, 'SUCCEEDED', 3, now(), now(), 'discrepancy'),
                   ('d', 2, 900, 'PAYING', 2, now(), now(), NULL);
            UPDATE r_orders SET checked_at = now() WHERE verdict IS NOT NULL;
            INSERT INTO r_payouts (order_id, payout_ref, uid, amount, state, state_rank, paid_count, paid_sum,
                                   created_at, updated_at)
            VALUES ('a', '', 1, 500, 'SUCCEEDED', 2, 1, 500, now(), now()),
                   ('b', '', 1, 300, 'FAILED', 2, 0, 0, now(), now()),
                   ('c', '', 2, 700, 'SUCCEEDED', 2, 2, 1400, now(), now());
            INSERT INTO r_entries (entry_id, uid, kind, amount, order_id, balance_after, created_at)
            VALUES (1, 1, 'CREDIT', 2000, '', 2000, now()), (2, 1, 'DEBIT', 500, 'a', 1500, now()),
                   (3, 1, 'DEBIT', 300, 'b', 1200, now()), (4, 1, 'REFUND', 300, 'b', 1500, now()),
                   (5, NULL, 'VOID', 0, 'x', NULL, now());
            INSERT INTO r_balances (uid, credits, debits, refunds, balance, last_entry_id)
            VALUES (1, 2000, 800, 300, 1500, 4);
        """)
        assert await migrate(db, schema, MIGRATIONS) == ["recon_svc/003_running_sums.sql"]
        both = await running_and_recount(db)
        running, recount = both.running, both.recount
        assert differences(running, recount) == []
        assert running[Sum.SETTLED] == recount[Sum.SETTLED]
        settled, paid = running[Sum.SETTLED], running[Sum.SETTLED_PAID]
        assert (settled.count, settled.fen, paid.count, paid.fen) == (2, 500, 1, 500)
        assert (running[Sum.PAID].count, running[Sum.PAID].fen) == (3, 1900)
        assert (running[Sum.BALANCE].count, running[Sum.BALANCE].fen) == (1, 1500)
        assert (running[Sum.ORDER].count, running[Sum.VOID].count, running[Sum.JUDGED].count) == (4, 1, 3)
        shares = {r["order_id"]: (r["settled_fen"], r["settled_paid"])
                  for r in await db.fetch("SELECT order_id, settled_fen, settled_paid FROM r_orders")}
        assert shares == {"a": (500, 500), "b": (0, 0), "c": (None, None), "d": (None, None)}
    finally:
        await db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await db.close()
