"""Dependencies away mid-drain never dead-letter an order. gateway_mock, account_svc,
withdraw_svc and payout_svc in-process; withdraw_svc reaches PostgreSQL, and payout_svc
the gateway and Redis, through tools.faultproxy.FaultProxy. Each test cuts one link for a
few seconds while orders drain, heals it, and checks that every order ends SUCCEEDED, paid
once at the gateway and debited once, with nothing in the dead-letter stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from meshkit.db import create_pool
from meshkit.status import reason_of
from tests.integration.withdraw_support import WdMesh, _start, start_mesh
from tests.waiting import eventually
from tools.faultproxy import FaultProxy

CUT_S = 3.0
AMOUNT = 300
PAYOUT_ENV = {
    "PAYOUT_WORKERS_PER_CHANNEL": "3",
    # A few payouts a second, so that a cut comes while the batch is still draining.
    "PAYOUT_DEFAULT_RATES": "bank:8,alipay:8,balance:8",
    "PAYOUT_CLAIM_IDLE_MS": "1000",
    "PAYOUT_LOCK_TTL_MS": "3000",
    "PAYOUT_RETRY_BACKOFF_MS": "20",
    "PAYOUT_AWAIT_POLL_MS": "200",
    "PAYOUT_RATE_REFRESH_S": "0.5",
    "PAYOUT_SVC_METRICS_PORT": "0",
}


def via(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's."""
    p = urlsplit(url)
    userinfo = p.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


def target_of(url: str, default_port: int) -> tuple[str, int]:
    p = urlsplit(url)
    # `make test` always hands out TCP URLs (devstack); a socket path is a broken set-up.
    assert p.hostname, f"{p.scheme} URL without a TCP host cannot go through the fault proxy"
    return p.hostname, p.port or default_port


@dataclass
class Outages:
    m: WdMesh
    postgres: FaultProxy   # withdraw_svc -> PostgreSQL
    gateway: FaultProxy    # payout_svc -> gateway_mock
    redis: FaultProxy      # payout_svc -> Redis
    gateway_db: asyncpg.Pool

    async def orders(self, channel: str, count: int) -> tuple[int, list[str]]:
        uid, method = await self.m.user(balance_fen=count * AMOUNT, channel=channel)
        replies = await asyncio.gather(*(self.m.confirm(uid, method, AMOUNT) for _ in range(count)))
        return uid, [r.order.order_id for r in replies]

    async def states(self, uid: int) -> dict[str, str]:
        return {r["order_id"]: r["state"] for r in await self.m.order_rows(uid)}

    async def some_paid(self, uid: int, at_least: int) -> None:
        async def probe() -> bool:
            return list((await self.states(uid)).values()).count("SUCCEEDED") >= at_least

        await eventually(probe, timeout=15, what=f"{at_least} orders of {uid} paid")

    async def hold_cut(self, proxy: FaultProxy) -> None:
        """Keep `proxy` cut for CUT_S, and until clients have knocked on it a few times."""
        started = time.monotonic()

        async def long_enough() -> bool:
            return time.monotonic() - started >= CUT_S and proxy.refused >= 3

        await eventually(long_enough, timeout=CUT_S + 10, what="the cut to be felt")

    async def assert_all_paid_once(self, uid: int, order_ids: list[str], channel: str) -> None:
        async def settled() -> dict[str, str] | None:
            states = await self.states(uid)
            return states if set(states.values()) == {"SUCCEEDED"} else None

        try:
            await eventually(settled, timeout=30, interval=0.1, what=f"orders of {uid} to succeed")
        finally:
            dead = await self.m.redis.xlen(self.m.keys.payout_dead_letters(channel))
            assert dead == 0, f"{dead} dead letters on {channel}"
        rows = await self.gateway_db.fetch(
            "SELECT order_id, state, amount_fen FROM payouts WHERE order_id = ANY($1::text[])", order_ids)
        assert sorted(r["order_id"] for r in rows) == sorted(order_ids)  # one payout each
        assert {(r["state"], r["amount_fen"]) for r in rows} == {("SUCCEEDED", AMOUNT)}
        for order_id in order_ids:
            assert await self.m.entries(order_id) == ["DEBIT"], order_id
        assert await self.m.balance(uid) == 0
        await self.m.ledger_ok([uid])


@pytest.fixture(scope="module")
async def om(mesh_env: dict[str, str]) -> AsyncIterator[Outages]:
    postgres = FaultProxy(*target_of(mesh_env["DATABASE_URL"], 5432))
    redis_proxy = FaultProxy(*target_of(mesh_env["REDIS_URL"], 6379))
    await postgres.start()
    await redis_proxy.start()
    m = await start_mesh(mesh_env, withdraw=False, extra={"WITHDRAW_RELAY_INTERVAL_MS": "100"})
    gateway = FaultProxy("127.0.0.1", m.gateway_srv.port)
    await gateway.start()
    withdraw = await m.start_withdraw({"DATABASE_URL": via(m.env["DATABASE_URL"], postgres.port)})
    m.env["WITHDRAW_SVC_ADDR"] = withdraw.address
    m.payout_srv = await _start("payout_svc", {
        **m.env, **PAYOUT_ENV,
        "GATEWAY_MOCK_ADDR": f"127.0.0.1:{gateway.port}",
        "REDIS_URL": via(m.env["REDIS_URL"], redis_proxy.port),
    })
    gateway_db = await create_pool(m.env["DATABASE_URL"], m.env["GATEWAY_MOCK_DB_SCHEMA"],
                                   min_size=1, max_size=2)
    assert gateway_db is not None
    yield Outages(m, postgres, gateway, redis_proxy, gateway_db)
    for proxy in (postgres, gateway, redis_proxy):
        await proxy.heal()
    await m.stop()
    await gateway_db.close()
    for proxy in (postgres, gateway, redis_proxy):
        await proxy.stop()


async def test_postgresql_cut_mid_drain_dead_letters_nothing(om: Outages) -> None:
    uid, order_ids = await om.orders("bank", 16)
    await om.some_paid(uid, 2)
    await om.postgres.cut()
    try:
        # An RPC that needs the database says UNAVAILABLE (retry), not INTERNAL.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await om.m.order(uid, order_ids[0])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
        assert (err.value.details() or "").startswith("PostgreSQL unavailable: ")
        assert reason_of(err.value) == "DEPENDENCY_UNAVAILABLE"
        await om.hold_cut(om.postgres)
        assert "SUCCEEDED" in (await om.states(uid)).values()
        assert set((await om.states(uid)).values()) != {"SUCCEEDED"}, "the cut came after the drain"
    finally:
        await om.postgres.heal()
    await om.assert_all_paid_once(uid, order_ids, "bank")


async def test_gateway_cut_mid_drain_dead_letters_nothing(om: Outages) -> None:
    uid, order_ids = await om.orders("alipay", 12)
    await om.some_paid(uid, 2)
    await om.gateway.cut()
    try:
        await om.hold_cut(om.gateway)
        assert set((await om.states(uid)).values()) != {"SUCCEEDED"}, "the cut came after the drain"
    finally:
        await om.gateway.heal()
    await om.assert_all_paid_once(uid, order_ids, "alipay")


async def test_payout_workers_survive_redis_cut_and_resume(om: Outages) -> None:
    uid, order_ids = await om.orders("balance", 12)
    await om.some_paid(uid, 2)
    await om.redis.cut()
    try:
        await om.hold_cut(om.redis)
    finally:
        await om.redis.heal()
    await om.assert_all_paid_once(uid, order_ids, "balance")
