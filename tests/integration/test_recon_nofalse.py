"""No false alarms: many orders through the real mesh while the gateway injects latency,
transient errors, lost replies, asynchronous completions and definitive failures, recon
following the feeds all along; the compensation job finishes what the pipeline left. Once
everything settled, recon (near-real-time, self-check and daily) has found nothing.

RECON_NOFALSE_ORDERS sets the number of orders (default 2000)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from mesh.gateway.v1 import gateway_pb2
from mesh.recon.v1 import recon_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.server import RunningServer
from meshkit.timeconv import utcnow
from tests.harness import unlimited_rates
from tests.integration.recon_support import Recon, day_of
from tests.integration.test_recon_mesh import schema_pool, start_in_process
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually, never

log = logging.getLogger(__name__)

ORDERS = int(os.environ.get("RECON_NOFALSE_ORDERS", "2000"))
CHANNELS = ["nfbank", "nfalipay"]
ORDERS_PER_USER = 20
FAULTS: dict[str, Any] = {
    "latency_min_ms": 1, "latency_max_ms": 15, "transient_error_rate": 0.05, "lost_reply_rate": 0.05,
    "async_rate": 0.2, "async_delay_ms": 300, "async_failure_rate": 0.2, "definitive_failure_rate": 0.05,
}


@dataclass
class Mesh:
    m: WdMesh
    payout: RunningServer
    recon_srv: RunningServer
    recon: Recon


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[Mesh]:
    tag = uuid.uuid4().hex[:8]
    channels = ",".join(CHANNELS)
    m = await start_mesh(mesh_env, extra={
        "GATEWAY_CHANNELS": channels, "WITHDRAW_CHANNELS": channels, "WITHDRAW_RELAY_INTERVAL_MS": "50",
        "GATEWAY_FAULTS_REFRESH_S": "0.3", "GATEWAY_SWEEP_INTERVAL_S": "0.1",
        "GATEWAY_DB_POOL_SIZE": "4", "PAYOUT_DB_POOL_SIZE": "2", "RECON_DB_POOL_SIZE": "4",
        "PAYOUT_SVC_DB_SCHEMA": f"payout_nf{tag}", "RECON_SVC_DB_SCHEMA": f"recon_nf{tag}",
    })
    payout = await start_in_process("payout_svc", {
        **m.env, "PAYOUT_CHANNELS": channels, "PAYOUT_DEFAULT_RATES": unlimited_rates(channels),
        "PAYOUT_WORKERS_PER_CHANNEL": "16",
        "PAYOUT_RETRY_BACKOFF_MS": "20", "PAYOUT_AWAIT_POLL_MS": "200", "PAYOUT_CLAIM_IDLE_MS": "1000",
        "PAYOUT_LOCK_TTL_MS": "3000", "PAYOUT_GATEWAY_TIMEOUT_S": "2",
    })
    recon_srv = await start_in_process("recon_svc", {
        **m.env, "RECON_GRACE_S": "2", "RECON_POLL_MS": "200", "RECON_SELF_CHECK": "true",
        "RECON_STUCK_AFTER_S": "600", "RECON_AUDIT_S": "1",
    })
    for channel in CHANNELS:
        await m.gateway_admin().SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
            faults=gateway_pb2.ChannelFaults(channel=channel, **FAULTS)), timeout=10)
    mesh = Mesh(m, payout, recon_srv, Recon(recon_srv.address))
    try:
        yield mesh
    finally:
        await mesh.recon.close()
        await recon_srv.stop(0.5)
        await payout.stop(1.0)
        await m.stop()


async def test_no_false_alarms_under_gateway_faults(mesh: Mesh) -> None:
    m = mesh.m
    started = time.monotonic()
    gate = asyncio.Semaphore(32)

    async def user(n: int) -> tuple[int, str]:
        async with gate:
            return await m.user(balance_fen=ORDERS_PER_USER * 1000, channel=CHANNELS[n % 2])

    users = await asyncio.gather(*(user(n) for n in range((ORDERS + ORDERS_PER_USER - 1) // ORDERS_PER_USER)))

    async def place(n: int) -> str:
        uid, method = users[n // ORDERS_PER_USER]
        async with gate:
            reply = await m.confirm(uid, method, 100 + n % 900)
        return str(reply.order.order_id)

    order_ids = await asyncio.gather(*(place(n) for n in range(ORDERS)))
    placed = time.monotonic()
    assert len(set(order_ids)) == ORDERS

    # The pipeline settles most orders; the compensation job (as an operator would run it
    # early) pushes on whatever it left behind: dead letters, lost replies.
    async def open_orders() -> int:
        n = await m.pool.fetchval(
            "SELECT count(*) FROM orders WHERE state NOT IN ('SUCCEEDED', 'FAILED')")
        if n:
            await m.admin().RunCompensation(withdraw_pb2.RunCompensationRequest(min_age_seconds=5),
                                            timeout=60)
        return int(n)

    left = await eventually(open_orders, lambda n: n == 0, timeout=120.0, interval=1.0)
    assert left == 0, f"{left} orders never reached a final state"
    settled = time.monotonic()
    states = {r["state"]: r["n"] for r in await m.pool.fetch(
        "SELECT state, count(*) AS n FROM orders GROUP BY state")}
    assert states.get("SUCCEEDED", 0) > 0 and states.get("FAILED", 0) > 0, states

    recon_db = await schema_pool(m.env["DATABASE_URL"], m.env["RECON_SVC_DB_SCHEMA"])
    try:
        async def all_judged() -> bool:
            row = await recon_db.fetchrow(
                """
                SELECT count(*) FILTER (WHERE checked_at IS NOT NULL) AS checked,
                       count(*) FILTER (WHERE self_check_due_at IS NOT NULL) AS self_pending,
                       (SELECT count(*) FROM r_checks) AS pending
                FROM r_orders WHERE order_id = ANY($1)
                """, order_ids)
            assert row is not None
            return bool(row["checked"] == ORDERS and row["self_pending"] == 0 and row["pending"] == 0)

        assert await eventually(all_judged, bool, timeout=60.0, interval=0.5)
    finally:
        await recon_db.close()
    judged = time.monotonic()
    # More audit passes (conservation, stuck; RECON_AUDIT_S=1) over the settled state: none
    # may find anything while they run.
    await never(mesh.recon.found, within=1.5, interval=0.25, what="a discrepancy over the settled state")

    found = await mesh.recon.found()
    assert [(d.reason, d.order_id, d.detail) for d in found] == []
    report = await mesh.recon.daily(day_of(utcnow()))
    assert report["discrepancies"] == []
    assert report["orders"] == ORDERS
    assert report["gateway"]["succeeded_fen"] == report["gateway"]["orders_succeeded_fen"]
    status = await mesh.recon.stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
    assert status.credits_fen - status.debits_fen + status.refunds_fen == status.balances_fen
    assert status.open_discrepancies == 0
    log.warning("no-false-alarms: %d orders %s placed in %.1fs, settled after %.1fs, judged after %.1fs",
                ORDERS, states, placed - started, settled - started, judged - started)
    print(f"\nno-false-alarms: {ORDERS} orders {states}: placed {placed - started:.1f}s, "
          f"settled {settled - started:.1f}s, judged {judged - started:.1f}s")
