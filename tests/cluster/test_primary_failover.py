"""A Redis Cluster master killed mid-drain (run by `make test-cluster` only: it needs the
cluster tools/redis_cluster.py starts, named by REDIS_CLUSTER_DIR).

The channel's replica is made to lag first (asleep, its link dropped), so the jobs the relay
publishes next are acknowledged by the master alone; then the master is SIGKILLed and the
replica takes over without them. The relay notices the channel master's new lineage and
republishes them from PostgreSQL; every order ends paid exactly once, and the channel's
rate holds across the failover; recon's daily run finds nothing lost or paid twice."""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from meshkit.db import create_pool
from meshkit.server import RunningServer
from meshkit.timeconv import utcnow
from tests import harness
from tests.harness import patched_env
from tests.integration.recon_support import Recon, day_of
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually
from tools import redis_cluster
from tools.loadlib.stats import max_in_window

CHANNEL = "pfailover"
RATE = 10
# Orders queued before the kill: the backlog outlasts the failover at RATE per second.
BACKLOG = 40
# Orders published while the replica lags: the ones the failover loses.
LOST = 8


async def start_in_process(name: str, env: dict[str, str]) -> RunningServer:
    module = importlib.import_module(f"{name}.server")
    with patched_env(env):
        app, settings = module.build()
    return await harness.start_built(app, settings)


@pytest.fixture
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[tuple[WdMesh, asyncpg.Pool, Recon]]:
    tag = uuid.uuid4().hex[:8]
    m = await start_mesh(mesh_env, extra={
        "GATEWAY_CHANNELS": CHANNEL, "WITHDRAW_CHANNELS": CHANNEL,
        "WITHDRAW_RELAY_INTERVAL_MS": "100",
        "PAYOUT_SVC_DB_SCHEMA": f"payout_fo{tag}", "RECON_SVC_DB_SCHEMA": f"recon_fo{tag}",
    })
    payout = await start_in_process("payout_svc", {
        **m.env, "PAYOUT_CHANNELS": CHANNEL, "PAYOUT_DEFAULT_RATES": f"{CHANNEL}:{RATE}",
        "PAYOUT_WORKERS_PER_CHANNEL": "2", "PAYOUT_CLAIM_IDLE_MS": "1000",
        "PAYOUT_LOCK_TTL_MS": "3000", "PAYOUT_SVC_METRICS_PORT": "0"})
    recon_srv = await start_in_process("recon_svc", {
        **m.env, "RECON_GRACE_S": "1", "RECON_REFUND_GRACE_S": "2", "RECON_POLL_MS": "200",
        "RECON_CHECK_MS": "200", "RECON_STUCK_AFTER_S": "600"})
    recon = Recon(recon_srv.address)
    gateway = await create_pool(m.env["DATABASE_URL"], m.env["GATEWAY_MOCK_DB_SCHEMA"],
                                min_size=1, max_size=2)
    assert gateway is not None
    yield m, gateway, recon
    await recon.close()
    await recon_srv.stop(0.5)
    await payout.stop(2.0)
    await gateway.close()
    await m.stop()


async def stream_ids(m: WdMesh, order_ids: list[str]) -> dict[str, str | None]:
    rows = await m.pool.fetch("SELECT order_id, stream_id FROM outbox WHERE kind = 'PAYOUT' "
                              "AND order_id = ANY($1::text[]) AND published_at IS NOT NULL", order_ids)
    found: dict[str, str | None] = {o: None for o in order_ids}
    found.update({r["order_id"]: r["stream_id"] for r in rows})
    return found


async def test_a_killed_master_loses_nothing_pays_nothing_twice_and_keeps_the_rate(
    mesh: tuple[WdMesh, asyncpg.Pool, Recon],
) -> None:
    m, gateway, recon = mesh
    cluster = redis_cluster.load(Path(os.environ["REDIS_CLUSTER_DIR"]))
    stream = m.keys.payout_stream(CHANNEL)
    uid, method = await m.user(balance_fen=(BACKLOG + LOST) * 100, channel=CHANNEL)
    first = [r.order.order_id for r in await asyncio.gather(
        *(m.confirm(uid, method, 100) for _ in range(BACKLOG)))]

    async def paid() -> int:
        return int(await gateway.fetchval("SELECT count(*) FROM payouts WHERE state = 'SUCCEEDED' "
                                          "AND order_id = ANY($1::text[])", first))

    await eventually(paid, lambda n: n >= 3, timeout=20, what="the drain to be under way")

    sleeper = await asyncio.to_thread(redis_cluster.lag_replica, cluster, stream, 3.0)
    second = [r.order.order_id for r in await asyncio.gather(
        *(m.confirm(uid, method, 100) for _ in range(LOST)))]

    async def published() -> dict[str, str | None]:
        return await stream_ids(m, second)

    before = await eventually(published, lambda ids: all(ids.values()), timeout=10,
                              what="the relay to publish while the replica lags")
    victim = await asyncio.to_thread(redis_cluster.kill_primary, cluster, stream)
    promoted = await asyncio.to_thread(redis_cluster.wait_failover, cluster, stream, victim, 60)
    await asyncio.to_thread(sleeper.wait, 30)
    assert promoted.port != victim.port

    # The entries the master acknowledged alone are gone from the new master's stream...
    lost = [o for o in second if not await m.redis.xrange(stream, before[o], before[o], count=1)]
    assert lost, "the failover lost nothing: the test did not exercise a lagging replica"

    # ...and came back from PostgreSQL: every order is paid, once.
    async def settled() -> dict[str, str]:
        return {r["order_id"]: r["state"] for r in await m.order_rows(uid)}

    states = await eventually(settled, lambda s: set(s.values()) == {"SUCCEEDED"}, timeout=90,
                              interval=0.5, what="every order to settle")
    assert len(states) == BACKLOG + LOST
    after = await stream_ids(m, lost)
    assert all(after[o] != before[o] for o in lost), "a lost job was not republished"

    rows: list[Any] = await gateway.fetch(
        "SELECT order_id, state, amount_fen, extract(epoch FROM created_at)::float8 AS at "
        "FROM payouts WHERE order_id = ANY($1::text[])", first + second)
    per_order: dict[str, list[Any]] = {}
    for row in rows:
        per_order.setdefault(row["order_id"], []).append(row)
    assert sorted(per_order) == sorted(first + second)
    assert all(len(r) == 1 and r[0]["state"] == "SUCCEEDED" and r[0]["amount_fen"] == 100
               for r in per_order.values()), "an order paid twice or not as asked"
    for order_id in first + second:
        assert await m.entries(order_id) == ["DEBIT"], order_id
    await m.ledger_ok([uid])
    # The channel's quota held across the failover, in every 1-s window of the gateway's calls.
    assert max_in_window([r["at"] for r in rows]) <= RATE
    # recon over the three services' records: nothing lost, nothing paid twice.
    report = await recon.daily(day_of(utcnow()))
    assert report["discrepancies"] == []
    assert report["orders"] == BACKLOG + LOST
    paid_fen = report["gateway"]["succeeded_fen"]
    assert paid_fen == report["gateway"]["orders_succeeded_fen"] == 100 * (BACKLOG + LOST)
