"""payout_svc in the mesh (gateway_mock, account_svc, withdraw_svc, payout_svc in-process,
real PostgreSQL and Redis): orders placed through ConfirmWithdraw are paid exactly once,
whatever the gateway does. Each test pays through a channel of its own, so one test's
faults, rates and stream never reach another's. Schemas and the Redis key namespace are
this module's own (tests.integration.withdraw_support.start_mesh)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
from opentelemetry import trace

from mesh.gateway.v1 import gateway_pb2 as gw
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from meshkit.db import connect_schema, create_pool
from meshkit.server import RunningServer
from tests import harness
from tests.harness import patched_env, unlimited_rates
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

CHANNELS = "bank,alipay,balance,pok,pfail,pasync,plost,paway,pwipe,padmin,ptrace"
# Channels whose test starts a payout_svc of its own.
OWN_CHANNELS = "pdrain,pdlq"
PAYOUT_ENV = {
    "PAYOUT_CHANNELS": CHANNELS,
    "PAYOUT_DEFAULT_RATES": unlimited_rates(f"{CHANNELS},pdrain"),  # unless a test sets a rate
    "PAYOUT_WORKERS_PER_CHANNEL": "4",
    "PAYOUT_CLAIM_IDLE_MS": "1000",
    "PAYOUT_LOCK_TTL_MS": "3000",
    "PAYOUT_RETRY_BACKOFF_MS": "20",
    "PAYOUT_AWAIT_POLL_MS": "200",
    "PAYOUT_RATE_REFRESH_S": "0.5",
    "PAYOUT_SVC_METRICS_PORT": "0",
}
TERMINAL = {"SUCCEEDED", "FAILED"}


@dataclass
class PayoutMesh:
    m: WdMesh
    payout: RunningServer
    gateway_db: asyncpg.Pool
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def admin(self) -> payout_pb2_grpc.PayoutAdminServiceStub:
        channel = harness.channel(self.payout.address)
        self.channels.append(channel)
        return payout_pb2_grpc.PayoutAdminServiceStub(channel)

    async def faults(self, channel: str, **kwargs: Any) -> None:
        await self.m.gateway_admin().SetChannelFaults(
            gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(channel=channel, **kwargs)), timeout=10)

    async def orders(self, channel: str, count: int, amount_fen: int = 300) -> tuple[int, list[str]]:
        uid, method = await self.m.user(balance_fen=count * amount_fen, channel=channel)
        replies = await asyncio.gather(*(self.m.confirm(uid, method, amount_fen) for _ in range(count)))
        return uid, [r.order.order_id for r in replies]

    async def states(self, uid: int) -> dict[str, str]:
        rows = await self.m.order_rows(uid)
        return {r["order_id"]: r["state"] for r in rows}

    async def settled(self, uid: int, timeout: float = 20.0) -> dict[str, str]:
        async def probe() -> dict[str, str] | None:
            states = await self.states(uid)
            return states if states and set(states.values()) <= TERMINAL else None

        return await eventually(probe, timeout=timeout, interval=0.1, what=f"orders of {uid} to settle")

    async def gateway_rows(self, order_ids: list[str]) -> dict[str, list[asyncpg.Record]]:
        rows = await self.gateway_db.fetch(
            "SELECT * FROM payouts WHERE order_id = ANY($1::text[])", order_ids)
        found: dict[str, list[asyncpg.Record]] = {o: [] for o in order_ids}
        for row in rows:
            found[row["order_id"]].append(row)
        return found

    async def assert_paid_once(self, uid: int, order_ids: list[str]) -> None:
        """Each SUCCEEDED order: one SUCCEEDED gateway payout of its amount, a debit and no
        refund. Each FAILED one: no successful payout, and its debit refunded."""
        states = await self.states(uid)
        gateway = await self.gateway_rows(order_ids)
        orders = {r["order_id"]: r for r in await self.m.order_rows(uid)}
        for order_id in order_ids:
            rows = gateway[order_id]
            if states[order_id] == "SUCCEEDED":
                assert len(rows) == 1 and rows[0]["state"] == "SUCCEEDED", (order_id, rows)
                assert rows[0]["amount_fen"] == orders[order_id]["amount_fen"]
                assert await self.m.entries(order_id) == ["DEBIT"], order_id
            else:
                assert states[order_id] == "FAILED"
                assert all(r["state"] == "FAILED" for r in rows), (order_id, rows)

        async def refunded() -> bool:
            failed = [o for o in order_ids if states[o] == "FAILED"]
            kinds = [await self.m.entries(o) for o in failed]
            return all(sorted(k) == ["DEBIT", "REFUND"] for k in kinds)

        await eventually(refunded, what="failed orders to be refunded once")
        await self.m.ledger_ok([uid])


async def start_payout(env: dict[str, str]) -> RunningServer:
    module = importlib.import_module("payout_svc.server")
    with patched_env(env):
        app, settings = module.build()
    return await harness.start_built(app, settings)


@pytest.fixture(scope="module")
async def pm(mesh_env: dict[str, str]) -> AsyncIterator[PayoutMesh]:
    m = await start_mesh(mesh_env, extra={
        "GATEWAY_CHANNELS": f"{CHANNELS},{OWN_CHANNELS}", "WITHDRAW_CHANNELS": f"{CHANNELS},{OWN_CHANNELS}",
        "WITHDRAW_RELAY_INTERVAL_MS": "100",
        "GATEWAY_FAULTS_REFRESH_S": "0.5", "GATEWAY_SWEEP_INTERVAL_S": "0.1",
        "PAYOUT_SVC_DB_SCHEMA": f"payout_{uuid.uuid4().hex[:8]}", "GATEWAY_DB_POOL_SIZE": "3",
    })
    payout = await start_payout({**m.env, **PAYOUT_ENV})
    gateway_db = await create_pool(m.env["DATABASE_URL"], m.env["GATEWAY_MOCK_DB_SCHEMA"],
                                   min_size=1, max_size=2)
    assert gateway_db is not None
    pm = PayoutMesh(m, payout, gateway_db)
    yield pm
    for channel in pm.channels:
        await channel.close()
    await payout.stop(2.0)
    await gateway_db.close()
    await m.stop()


async def test_orders_are_paid_once_end_to_end(pm: PayoutMesh) -> None:
    uid, order_ids = await pm.orders("pok", 6)
    states = await pm.settled(uid)
    assert set(states.values()) == {"SUCCEEDED"}
    await pm.assert_paid_once(uid, order_ids)
    history = [r["to_state"] for r in await pm.m.pool.fetch(
        "SELECT to_state FROM order_history WHERE order_id = $1 ORDER BY id", order_ids[0])]
    assert history[-2:] == ["PAYING", "SUCCEEDED"]


async def test_definitive_failure_fails_the_order_and_refunds_it(pm: PayoutMesh) -> None:
    await pm.faults("pfail", definitive_failure_rate=1.0)
    uid, order_ids = await pm.orders("pfail", 3)
    states = await pm.settled(uid)
    assert set(states.values()) == {"FAILED"}
    rows = await pm.m.order_rows(uid)
    assert {r["failure_reason"] for r in rows} == {"PAYOUT_FAILED"}
    reasons = await pm.m.pool.fetch(
        "SELECT reason FROM order_history WHERE order_id = ANY($1::text[]) AND to_state = 'FAILED'",
        order_ids)
    assert len(reasons) == 3 and all("account closed" in r["reason"] for r in reasons)
    await pm.assert_paid_once(uid, order_ids)


async def test_async_acceptance_is_followed_to_its_final_state(pm: PayoutMesh, redis_client: Any) -> None:
    await pm.faults("pasync", async_rate=1.0, async_delay_ms=600)
    uid, order_ids = await pm.orders("pasync", 3)

    async def parked() -> bool:
        return await redis_client.zcard(pm.m.keys.payout_awaiting("pasync")) == 3

    await eventually(parked, what="async payouts to be parked")
    assert set((await pm.states(uid)).values()) == {"PAYING"}
    states = await pm.settled(uid)
    assert set(states.values()) == {"SUCCEEDED"}
    await pm.assert_paid_once(uid, order_ids)
    assert await redis_client.zcard(pm.m.keys.payout_awaiting("pasync")) == 0


async def test_lost_replies_never_pay_twice_nor_refund_a_paid_order(pm: PayoutMesh) -> None:
    await pm.faults("plost", lost_reply_rate=0.3, latency_min_ms=1, latency_max_ms=5)
    uid, order_ids = await pm.orders("plost", 40, amount_fen=150)
    states = await pm.settled(uid, timeout=30.0)
    # The gateway committed every call: whatever the replies, every order is paid, once.
    assert set(states.values()) == {"SUCCEEDED"}
    await pm.assert_paid_once(uid, order_ids)
    lost = await pm.gateway_db.fetchval(
        "SELECT count(*) FROM payouts WHERE order_id = ANY($1::text[])", order_ids)
    assert lost == 40


async def test_three_failures_dead_letter_and_replay_pays_once(pm: PayoutMesh) -> None:
    # A payout the gateway takes but does not answer in time (it may have committed) is an
    # unknown outcome, one attempt each. Here it never commits: the gateway's handler is
    # cancelled at the deadline, before its commit (half the latency in).
    await pm.faults("pdlq", latency_min_ms=3000, latency_max_ms=3000)
    env = {**pm.m.env, **PAYOUT_ENV, "PAYOUT_CHANNELS": "pdlq", "PAYOUT_GATEWAY_TIMEOUT_S": "0.5",
           "PAYOUT_DEFAULT_RATES": unlimited_rates("pdlq")}
    own = await start_payout(env)
    channel = harness.channel(own.address)
    admin = payout_pb2_grpc.PayoutAdminServiceStub(channel)
    try:
        uid, [order_id] = await pm.orders("pdlq", 1)

        async def dead() -> list[payout_pb2.DeadLetter]:
            reply = await admin.ListDeadLetters(payout_pb2.ListDeadLettersRequest(channel="pdlq"))
            return list(reply.dead_letters)

        [letter] = await eventually(dead, timeout=20, what="the message to reach the dead-letter stream")
        assert letter.attempts == 3 and letter.job.order_id == order_id
        assert "DEADLINE_EXCEEDED" in letter.reason and "outcome unknown" in letter.reason
        # The outcome was never known to be a failure: the order waits, unpaid and unrefunded.
        assert (await pm.states(uid))[order_id] == "PAYING"
        assert (await pm.gateway_rows([order_id]))[order_id] == []
        assert await pm.m.entries(order_id) == ["DEBIT"]
        stats = await admin.GetChannelStats(payout_pb2.GetChannelStatsRequest(channel="pdlq"))
        assert stats.channels[0].dead_letters == 1 and stats.channels[0].pending == 0

        await pm.faults("pdlq")

        async def latency_ms() -> int:
            got = await pm.m.gateway_admin().GetChannelFaults(gw.GetChannelFaultsRequest(channel="pdlq"))
            return int(got.faults.latency_max_ms)
        await eventually(latency_ms, lambda ms: ms == 0, timeout=5, what="the gateway to drop the latency")
        replayed = await admin.ReplayDeadLetters(payout_pb2.ReplayDeadLettersRequest(
            channel="pdlq", dead_letter_ids=[letter.dead_letter_id]))
        assert replayed.replayed == 1
        states = await pm.settled(uid)
        assert states[order_id] == "SUCCEEDED"
        again = await admin.ReplayDeadLetters(payout_pb2.ReplayDeadLettersRequest(
            channel="pdlq", dead_letter_ids=[letter.dead_letter_id]))
        assert again.replayed == 0
        await pm.assert_paid_once(uid, [order_id])
        assert await dead() == []
    finally:
        await channel.close()
        await own.stop(2.0)


async def test_a_channel_unavailable_for_a_while_dead_letters_nothing(pm: PayoutMesh,
                                                                     redis_client: Any) -> None:
    # UNAVAILABLE from the gateway is the gateway away: no attempt is used up, however long.
    await pm.faults("paway", transient_error_rate=1.0)
    uid, order_ids = await pm.orders("paway", 2)
    stream = pm.m.keys.payout_stream("paway")

    async def delivered_more_than_max_attempts() -> bool:
        pending = await redis_client.xpending_range(stream, "payout", min="-", max="+", count=10)
        return len(pending) == 2 and all(p["times_delivered"] > 3 for p in pending)

    await eventually(delivered_more_than_max_attempts, timeout=30, what="payouts to be tried again and again")
    assert await redis_client.xlen(pm.m.keys.payout_dead_letters("paway")) == 0
    assert set((await pm.states(uid)).values()) == {"PAYING"}
    await pm.faults("paway")
    states = await pm.settled(uid)
    assert set(states.values()) == {"SUCCEEDED"}
    await pm.assert_paid_once(uid, order_ids)
    assert await redis_client.xlen(pm.m.keys.payout_dead_letters("paway")) == 0


async def test_payouts_resume_after_a_redis_wipe(pm: PayoutMesh, redis_client: Any) -> None:
    uid, _ = await pm.orders("pwipe", 2)
    await pm.settled(uid)
    async for key in redis_client.scan_iter(match=f"{pm.m.keys.prefix}:*"):
        await redis_client.delete(key)
    uid2, second = await pm.orders("pwipe", 3)
    states = await pm.settled(uid2)
    assert set(states.values()) == {"SUCCEEDED"}
    await pm.assert_paid_once(uid2, second)


async def test_admin_stats_rates_and_validation(pm: PayoutMesh) -> None:
    admin = pm.admin()
    reply = await admin.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="padmin", rate_per_second=25))
    assert reply.stats.channel == "padmin" and reply.stats.rate_limit_per_second == 25
    listed = await admin.GetChannelStats(payout_pb2.GetChannelStatsRequest())
    assert {s.channel for s in listed.channels} == set(CHANNELS.split(","))
    # payout_svc's own table, read as payout_svc's role (withdraw_svc's may not read it).
    conn = await connect_schema(pm.m.env["DATABASE_URL"], pm.m.env["PAYOUT_SVC_DB_SCHEMA"])
    try:
        stored = await conn.fetchval("SELECT rate_per_second FROM channel_config WHERE channel = $1",
                                     "padmin")
    finally:
        await conn.close()
    assert stored == 25

    uid, _ = await pm.orders("padmin", 4)
    await pm.settled(uid)
    after = await admin.GetChannelStats(payout_pb2.GetChannelStatsRequest(channel="padmin"))
    assert (after.channels[0].backlog, after.channels[0].pending) == (0, 0)
    # Redis registers a consumer in the group once it has been served a message.
    assert after.channels[0].consumers == 1

    bad = [
        admin.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="padmin", rate_per_second=-1)),
        # No limit is never a default: rate 0 alone is refused, and so is a rate with unlimited.
        admin.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="padmin", rate_per_second=0)),
        admin.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="padmin", rate_per_second=5,
                                                              unlimited=True)),
        admin.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="pigeon", rate_per_second=5)),
        admin.GetChannelStats(payout_pb2.GetChannelStatsRequest(channel="pigeon")),
        admin.ListDeadLetters(payout_pb2.ListDeadLettersRequest(channel="padmin", page_size=-1)),
        admin.ReplayDeadLetters(payout_pb2.ReplayDeadLettersRequest(channel="padmin", dead_letter_ids=["x"])),
    ]
    for call in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    kept = await admin.GetChannelStats(payout_pb2.GetChannelStatsRequest(channel="padmin"))
    assert kept.channels[0].rate_limit_per_second == 25


async def test_drain_finishes_messages_in_hand_and_takes_no_more(pm: PayoutMesh, redis_client: Any) -> None:
    """SIGTERM's drain (RunningServer.stop): what a worker holds is paid and settled, the
    rest stays queued, untouched, for the next consumer."""
    await pm.faults("pdrain", latency_min_ms=400, latency_max_ms=400)
    env = {**pm.m.env, **PAYOUT_ENV, "PAYOUT_CHANNELS": "pdrain", "PAYOUT_WORKERS_PER_CHANNEL": "3",
           "PAYOUT_BATCH_SIZE": "2"}
    uid, order_ids = await pm.orders("pdrain", 24)
    first = await start_payout(env)

    async def in_hand() -> list[str]:
        return [o for o, s in (await pm.states(uid)).items() if s == "PAYING"]

    paying = await eventually(in_hand, what="payouts in hand")
    await first.stop(10.0)
    states = await pm.states(uid)
    assert all(states[o] == "SUCCEEDED" for o in paying), states
    assert "PAYING" not in states.values()
    # 3 workers with batches of 2, at most 2 rounds
    assert list(states.values()).count("PENDING_PAYOUT") >= 24 - 3 * 2 * 2
    pending = await redis_client.xpending(pm.m.keys.payout_stream("pdrain"), "payout")
    assert pending["pending"] == 0  # nothing taken and left unfinished

    second = await start_payout(env)
    try:
        final = await pm.settled(uid)
        assert set(final.values()) == {"SUCCEEDED"}
        await pm.assert_paid_once(uid, order_ids)
    finally:
        await second.stop(5.0)


class TraceIdsOfLogs(logging.Handler):
    """Which trace each log line of the given loggers was written in."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        context = trace.get_current_span().get_span_context()
        self.lines.append((record.name, record.getMessage(), context.trace_id))


async def test_trace_context_crosses_the_stream_hop(pm: PayoutMesh) -> None:
    # Spans may not be recorded (no exporter configured), but their context still travels:
    # the log lines written while paying carry the trace id of the user's confirm.
    seen = TraceIdsOfLogs()
    loggers = [logging.getLogger(name) for name in ("payout_svc.service", "gateway_mock.service")]
    for logger in loggers:
        logger.addHandler(seen)
        logger.setLevel(logging.DEBUG)  # the per-order lines are DEBUG
    try:
        uid, method = await pm.m.user(balance_fen=500, channel="ptrace")
        with trace.get_tracer("payout-tests").start_as_current_span("user confirms") as root:
            await pm.m.confirm(uid, method, 500)
        trace_id = root.get_span_context().trace_id
        assert trace_id != 0
        await pm.settled(uid)

        async def both_hops() -> bool:
            names = {name for name, _, tid in seen.lines if tid == trace_id}
            return names == {"payout_svc.service", "gateway_mock.service"}

        await eventually(both_hops, what="payout and gateway logs in the confirming trace")
        settled = [msg for name, msg, tid in seen.lines if tid == trace_id and name == "payout_svc.service"]
        assert "order settled SUCCEEDED" in settled
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
