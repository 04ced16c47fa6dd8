"""recon_svc over the real services (gateway_mock, account_svc, withdraw_svc, payout_svc,
in-process, with schemas and a Redis namespace of this module's own). Legitimate orders go
through ConfirmWithdraw and the payout pipeline; each fault is then written into the owning
service's storage the way a bug would (through that service's own SQL where possible,
dropping a guard only where the bug needs it). recon must name exactly that class, for
exactly that order, within 5 s, and again in the daily report."""

from __future__ import annotations

import asyncio
import importlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import grpc
import pytest

from account_svc.repository import LedgerRepository
from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.recon.v1 import recon_pb2
from meshkit.db import create_pool
from meshkit.server import RunningServer
from meshkit.timeconv import from_ts, utcnow
from tests import harness
from tests.harness import new_id, patched_env, unlimited_rates
from tests.integration.recon_support import Recon, daily_reasons, day_of
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

TERMINAL = {"SUCCEEDED", "FAILED"}
CHANNELS = "bank,pfail"
DETECT_WITHIN_S = 5.0


async def start_in_process(name: str, env: dict[str, str]) -> RunningServer:
    """Like tests.harness.start_service, but leaves no `<NAME>_ADDR` behind for others."""
    module = importlib.import_module(f"{name}.server")
    with patched_env(env):
        app, settings = module.build()
    return await harness.start_built(app, settings)


@dataclass
class ReconMesh:
    m: WdMesh
    payout: RunningServer
    recon_srv: RunningServer
    recon: Recon
    ledger_db: asyncpg.Pool
    gateway_db: asyncpg.Pool
    recon_db: asyncpg.Pool
    planted: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    @property
    def orders_db(self) -> asyncpg.Pool:
        return self.m.pool

    async def state(self, order_id: str) -> str:
        return await self.m.order_state(order_id)

    async def legit(self, channel: str = "bank", amount: int = 300, extra_funds: int = 0) -> tuple[str, int]:
        """An order placed through ConfirmWithdraw, paid (or failed) by payout_svc."""
        uid, method = await self.m.user(balance_fen=amount + extra_funds, channel=channel)
        reply = await self.m.confirm(uid, method, amount)
        oid = reply.order.order_id

        async def final() -> str | None:
            state = await self.state(oid)
            return state if state in TERMINAL else None

        await eventually_true(final, 20.0)
        return oid, uid

    # ---- what a buggy orchestrator would have written into withdraw_svc's tables ----

    async def bug_order(self, amount: int, *, created_ago_s: int = 0) -> tuple[str, int, str]:
        uid, method = await self.m.user(balance_fen=amount * 3, channel="bank")
        oid = new_id("bug")
        await self.orders_db.execute(
            """
            INSERT INTO orders (order_id, uid, request_id, amount_fen, channel, method_id, state, created_at)
            VALUES ($1, $2, $1, $3, 'bank', $4, 'PENDING_DEDUCT', now() - $5 * interval '1 second')
            """,
            oid, uid, amount, method, created_ago_s)
        return oid, uid, method

    async def move(self, order_id: str, *states: str) -> None:
        for state in states:
            await self.orders_db.execute(
                "UPDATE orders SET state = $2,"
                " failure_reason = CASE WHEN $2 = 'FAILED' THEN 'bug' ELSE '' END WHERE order_id = $1",
                order_id, state)

    async def deduct(self, order_id: str, uid: int, amount: int) -> None:
        await self.m.account().Deduct(
            account_pb2.DeductRequest(order_id=order_id, uid=uid, amount_fen=amount), timeout=10)

    async def gateway_pay(self, order_id: str, uid: int, method: str, amount: int) -> None:
        reply = await self.m.gateway().Payout(gateway_pb2.PayoutRequest(
            order_id=order_id, uid=uid, channel="bank", method_id=method, amount_fen=amount), timeout=10)
        assert reply.payout.state == gateway_pb2.PAYOUT_STATE_SUCCEEDED

    async def close(self) -> None:
        await self.recon.close()
        await self.recon_srv.stop(0.5)
        await self.payout.stop(1.0)
        for pool in (self.ledger_db, self.gateway_db, self.recon_db):
            await pool.close()
        await self.m.stop()


async def eventually_true(probe: Callable[[], Awaitable[object]], timeout: float) -> None:
    value = await eventually(probe, bool, timeout=timeout)
    assert value, f"condition not met within {timeout}s"


async def schema_pool(dsn: str, schema: str) -> asyncpg.Pool:
    pool = await create_pool(dsn, schema, min_size=1, max_size=2)
    assert pool is not None
    return pool


@pytest.fixture(scope="module")
async def rm(mesh_env: dict[str, str]) -> AsyncIterator[ReconMesh]:
    tag = uuid.uuid4().hex[:8]
    m = await start_mesh(mesh_env, extra={
        "GATEWAY_CHANNELS": CHANNELS, "WITHDRAW_CHANNELS": CHANNELS, "WITHDRAW_RELAY_INTERVAL_MS": "100",
        "GATEWAY_FAULTS_REFRESH_S": "0.3", "GATEWAY_SWEEP_INTERVAL_S": "0.1",
        "GATEWAY_DB_POOL_SIZE": "4", "PAYOUT_DB_POOL_SIZE": "2", "RECON_DB_POOL_SIZE": "4",
        "PAYOUT_SVC_DB_SCHEMA": f"payout_rc{tag}", "RECON_SVC_DB_SCHEMA": f"recon_rc{tag}",
    })
    payout = await start_in_process("payout_svc", {
        **m.env, "PAYOUT_CHANNELS": CHANNELS, "PAYOUT_DEFAULT_RATES": unlimited_rates(CHANNELS),
        "PAYOUT_WORKERS_PER_CHANNEL": "4",
        "PAYOUT_RETRY_BACKOFF_MS": "20", "PAYOUT_AWAIT_POLL_MS": "200", "PAYOUT_RATE_REFRESH_S": "0.5",
    })
    recon_srv = await start_in_process("recon_svc", {
        **m.env, "RECON_GRACE_S": "1", "RECON_REFUND_GRACE_S": "2", "RECON_POLL_MS": "100",
        "RECON_CHECK_MS": "100", "RECON_SELF_CHECK": "true", "RECON_STUCK_AFTER_S": "600",
        "RECON_AUDIT_S": "0.5",
    })
    dsn = m.env["DATABASE_URL"]
    rm = ReconMesh(m, payout, recon_srv, Recon(recon_srv.address),
                   await schema_pool(dsn, m.env["ACCOUNT_SVC_DB_SCHEMA"]),
                   await schema_pool(dsn, m.env["GATEWAY_MOCK_DB_SCHEMA"]),
                   await schema_pool(dsn, m.env["RECON_SVC_DB_SCHEMA"]))
    await m.gateway_admin().SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
        faults=gateway_pb2.ChannelFaults(channel="pfail", definitive_failure_rate=1.0)), timeout=10)
    try:
        yield rm
    finally:
        await rm.close()


# ---- the faults, as bugs in the owning services would leave them ----

async def plant_missing_debit(rm: ReconMesh) -> str:
    # The orchestrator skipped the deduct and paid anyway.
    oid, uid, method = await rm.bug_order(400)
    await rm.move(oid, "PENDING_PAYOUT", "PAYING")
    await rm.gateway_pay(oid, uid, method, 400)
    await rm.move(oid, "SUCCEEDED")
    return oid


async def plant_debit_without_order(rm: ReconMesh) -> str:
    # A caller debited for an order the orchestrator never created.
    uid, _ = await rm.m.user(balance_fen=1000)
    oid = new_id("ghost")
    await rm.deduct(oid, uid, 600)
    return oid


async def plant_missing_refund(rm: ReconMesh) -> str:
    # The orchestrator failed a debited order but lost the refund job it owed.
    oid, uid, _ = await rm.bug_order(500)
    await rm.deduct(oid, uid, 500)
    async with rm.orders_db.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE orders SET state = 'PENDING_PAYOUT' WHERE order_id = $1", oid)
        await conn.execute(
            "UPDATE orders SET state = 'FAILED', failure_reason = 'bug' WHERE order_id = $1", oid)
        await conn.execute("DELETE FROM outbox WHERE kind = 'REFUND' AND order_id = $1", oid)
    return oid


async def plant_refund_on_succeeded(rm: ReconMesh) -> str:
    # A refund written for an order that was paid. account_svc's Refund refuses it (it asks
    # withdraw_svc first), so the bug writes it through the ledger's own SQL.
    oid, _ = await rm.legit("bank")
    assert await rm.state(oid) == "SUCCEEDED"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rm.m.account().Refund(account_pb2.RefundRequest(order_id=oid), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    [debit] = [e for e in await LedgerRepository(rm.ledger_db).order_entries(oid) if e.kind.value == "DEBIT"]
    await LedgerRepository(rm.ledger_db).insert_refund(debit)
    return oid


async def plant_payout_without_debit(rm: ReconMesh) -> str:
    # The gateway paid an order id nobody created or debited.
    uid, method = await rm.m.user(channel="bank")
    oid = new_id("ghost")
    await rm.gateway_pay(oid, uid, method, 700)
    return oid


async def plant_double_payout(rm: ReconMesh) -> str:
    # The gateway completed (paid) the same payout a second time.
    oid, _ = await rm.legit("bank")
    row = await rm.gateway_db.fetchrow("SELECT * FROM payouts WHERE order_id = $1", oid)
    assert row is not None and row["state"] == "SUCCEEDED"
    async with rm.gateway_db.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE payouts SET completed_at = now() WHERE order_id = $1", oid)
        await conn.execute(
            "INSERT INTO changes (kind, key, payload) VALUES ('payout', $1, $2::jsonb)", oid, json.dumps({
                "order_id": oid, "uid": row["uid"], "channel": row["channel"], "method_id": row["method_id"],
                "amount_fen": row["amount_fen"], "state": "SUCCEEDED", "failure_reason": ""}))
    return oid


async def plant_amount_mismatch(rm: ReconMesh) -> str:
    # The orchestrator sent the gateway a different amount than it debited.
    oid, uid, method = await rm.bug_order(800)
    await rm.deduct(oid, uid, 800)
    await rm.move(oid, "PENDING_PAYOUT", "PAYING")
    await rm.gateway_pay(oid, uid, method, 880)
    await rm.move(oid, "SUCCEEDED")
    return oid


async def plant_state_mismatch(rm: ReconMesh) -> str:
    # The gateway paid, the orchestrator recorded FAILED (and refunded).
    oid, uid, method = await rm.bug_order(900)
    await rm.deduct(oid, uid, 900)
    await rm.move(oid, "PENDING_PAYOUT", "PAYING")
    await rm.gateway_pay(oid, uid, method, 900)
    await rm.move(oid, "FAILED")
    return oid


async def plant_stuck_order(rm: ReconMesh) -> str:
    # An order the pipeline lost an hour ago (no payout job ever queued).
    oid, uid, _ = await rm.bug_order(300, created_ago_s=3600)
    await rm.deduct(oid, uid, 300)
    await rm.move(oid, "PENDING_PAYOUT")
    return oid


PLANTS: dict[str, Callable[[ReconMesh], Awaitable[str]]] = {
    "missing_debit": plant_missing_debit,
    "debit_without_order": plant_debit_without_order,
    "missing_refund": plant_missing_refund,
    "refund_on_succeeded": plant_refund_on_succeeded,
    "payout_without_debit": plant_payout_without_debit,
    "double_payout": plant_double_payout,
    "amount_mismatch": plant_amount_mismatch,
    "state_mismatch": plant_state_mismatch,
    "stuck_order": plant_stuck_order,
}


@pytest.fixture(scope="module")
async def planted(rm: ReconMesh) -> dict[str, tuple[str, datetime]]:
    """Every fault that needs no guard dropped, planted concurrently; with the time each
    plant was complete."""
    async def one(reason: str) -> tuple[str, tuple[str, datetime]]:
        oid = await PLANTS[reason](rm)
        return reason, (oid, utcnow())

    rm.planted.update(dict(await asyncio.gather(*(one(r) for r in PLANTS))))
    return rm.planted


async def assert_reported(rm: ReconMesh, reason: str, oid: str, planted_at: datetime) -> None:
    found = await eventually(lambda: rm.recon.found(oid, "realtime"), bool, timeout=DETECT_WITHIN_S + 1)
    assert {d.reason for d in found} == {reason}, [(d.reason, d.detail) for d in found]
    [hit] = found
    created = from_ts(hit.create_time)
    assert created is not None
    assert (created - planted_at).total_seconds() < DETECT_WITHIN_S
    if reason not in ("stuck_order", "debit_without_order", "payout_without_debit"):
        # The ledger and the gateway, asked directly, agree (or see less: one query per side).
        async def self_checked() -> bool:
            return bool(await rm.recon_db.fetchval(
                "SELECT self_check_due_at IS NULL AND self_checked_at >= $2 FROM r_orders"
                " WHERE order_id = $1", oid, created))
        await eventually_true(self_checked, 5.0)
        assert {d.reason for d in await rm.recon.found(oid, "self_check")} <= {reason}
    created_at = await rm.recon_db.fetchval("SELECT created_at FROM r_orders WHERE order_id = $1", oid)
    report = await rm.recon.daily(day_of(created_at or utcnow()))
    assert daily_reasons(report, oid) == {reason}


@pytest.mark.parametrize("reason", list(PLANTS))
async def test_planted_fault_is_reported_as_its_class(
    rm: ReconMesh, planted: dict[str, tuple[str, datetime]], reason: str
) -> None:
    oid, at = planted[reason]
    await assert_reported(rm, reason, oid, at)


async def test_ledger_conservation_breach_is_reported_for_its_account(rm: ReconMesh) -> None:
    uid, _ = await rm.m.user(balance_fen=1000)
    # Money from nowhere: the balance moved without an entry; the next credit carries it.
    await rm.ledger_db.execute("UPDATE accounts SET balance = balance + 500 WHERE uid = $1", uid)
    await rm.m.fund(uid, 200)
    subject = f"uid:{uid}"
    rm.planted["conservation"] = (subject, utcnow())

    async def hits() -> list[recon_pb2.Discrepancy]:
        return [d for d in await rm.recon.found(reason="conservation") if d.subject == subject]

    [hit] = await eventually(hits, bool, timeout=DETECT_WITHIN_S)
    assert hit.uid == uid and hit.source == "realtime" and "off by 500" in hit.detail
    report = await rm.recon.daily(day_of(utcnow()))
    assert [d["reason"] for d in report["discrepancies"] if d["subject"] == subject] == ["conservation"]


async def test_legitimate_orders_come_out_clean(rm: ReconMesh) -> None:
    paid = [await rm.legit("bank", 200 + i) for i in range(3)]
    failed = [await rm.legit("pfail", 300 + i) for i in range(3)]
    assert {await rm.state(o) for o, _ in paid} == {"SUCCEEDED"}
    assert {await rm.state(o) for o, _ in failed} == {"FAILED"}
    ids = [o for o, _ in paid + failed]

    async def judged() -> bool:
        n = await rm.recon_db.fetchval(
            "SELECT count(*) FROM r_orders WHERE order_id = ANY($1) AND self_checked_at IS NOT NULL", ids)
        return bool(n == len(ids))

    await eventually_true(judged, 10.0)
    verdicts = await rm.recon_db.fetch("SELECT DISTINCT verdict FROM r_orders WHERE order_id = ANY($1)", ids)
    assert [r["verdict"] for r in verdicts] == ["ok"]
    for oid in ids:
        assert await rm.recon.found(oid) == [], oid


async def test_check_order_asks_the_services_now(
    rm: ReconMesh, planted: dict[str, tuple[str, datetime]]
) -> None:
    stub = rm.recon.stub
    oid, _ = await rm.legit("pfail", 250)

    async def refunded() -> bool:
        return sorted(await rm.m.entries(oid)) == ["DEBIT", "REFUND"]

    await eventually_true(refunded, 10.0)
    clean = await stub.CheckOrder(recon_pb2.CheckOrderRequest(order_id=oid), timeout=10)
    assert list(clean.discrepancies) == []
    bad = await stub.CheckOrder(
        recon_pb2.CheckOrderRequest(order_id=planted["amount_mismatch"][0]), timeout=10)
    assert [d.reason for d in bad.discrepancies] == ["amount_mismatch"]
    assert bad.discrepancies[0].discrepancy_id == 0  # live, not stored
    ghost = await stub.CheckOrder(recon_pb2.CheckOrderRequest(order_id=planted["debit_without_order"][0]))
    assert [d.reason for d in ghost.discrepancies] == ["debit_without_order"]
    for order_id, code in ((new_id("nobody"), grpc.StatusCode.NOT_FOUND),
                           ("", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CheckOrder(recon_pb2.CheckOrderRequest(order_id=order_id), timeout=10)
        assert err.value.code() == code


# ---- faults that need a guard of the ledger dropped: last, since the guard stays dropped ----

async def test_double_refund_after_the_check(rm: ReconMesh) -> None:
    oid, _uid = await rm.legit("pfail", 450)

    async def refunded() -> bool:
        return sorted(await rm.m.entries(oid)) == ["DEBIT", "REFUND"]

    await eventually_true(refunded, 10.0)
    await eventually_true(lambda: rm.recon_db.fetchval(
        "SELECT checked_at IS NOT NULL FROM r_orders WHERE order_id = $1", oid), 5.0)
    assert await rm.recon.found(oid) == []
    # The refund relay, without the unique guards, refunding the same debit again.
    await rm.ledger_db.execute("DROP INDEX entries_refund_of")
    await rm.ledger_db.execute("DROP INDEX entries_refund_order")
    [debit] = [e for e in await LedgerRepository(rm.ledger_db).order_entries(oid) if e.kind.value == "DEBIT"]
    await LedgerRepository(rm.ledger_db).insert_refund(debit)
    rm.planted["double_refund"] = (oid, utcnow())
    await assert_reported(rm, "double_refund", oid, rm.planted["double_refund"][1])


async def test_double_debit(rm: ReconMesh) -> None:
    oid, uid = await rm.legit("bank", 350, extra_funds=350)
    assert await rm.state(oid) == "SUCCEEDED"
    # The ledger's own debit statement, run a second time once its unique guard is gone.
    await rm.ledger_db.execute("DROP INDEX entries_debit_order")
    assert await LedgerRepository(rm.ledger_db).debit(oid, uid, 350) is not None
    rm.planted["double_debit"] = (oid, utcnow())
    await assert_reported(rm, "double_debit", oid, rm.planted["double_debit"][1])


async def test_nothing_but_the_planted_faults_was_reported(rm: ReconMesh) -> None:
    subjects = {d.subject for d in await rm.recon.found()}
    assert subjects == {subject for subject, _ in rm.planted.values()}
    s = await rm.recon.stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
    assert {p.feed for p in s.positions} == {"account", "withdraw", "gateway"}
    # Every planted ledger fault kept its balance consistent, except the 500 fen from nowhere.
    assert s.balances_fen - (s.credits_fen - s.debits_fen + s.refunds_fen) == 500
