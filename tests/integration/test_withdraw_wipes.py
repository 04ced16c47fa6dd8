"""Redis wiped again and again while a payout is in flight (gateway_mock, account_svc,
withdraw_svc and payout_svc in-process, real PostgreSQL and Redis): every wipe brings the
PAYING order back, and it settles, paid exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.gateway.v1 import gateway_pb2 as gw
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

# The gateway answers PROCESSING and settles this long after the call: both wipes land
# while the answer is awaited, followed only in Redis.
ASYNC_DELAY_MS = 4000


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, payout=True, extra={
        "WITHDRAW_RELAY_INTERVAL_MS": "100", "GATEWAY_SWEEP_INTERVAL_S": "0.1",
        "PAYOUT_AWAIT_POLL_MS": "200", "PAYOUT_CLAIM_IDLE_MS": "1000", "PAYOUT_WORKERS_PER_CHANNEL": "2",
        # Only the wipe handling may bring the order back here, not the periodic sweep.
        "WITHDRAW_REPUBLISH_AFTER_S": "3600",
    })
    yield m
    await m.stop()


async def wipe(mesh: WdMesh) -> None:
    async for key in mesh.redis.scan_iter(match=f"{mesh.keys.prefix}:*"):
        await mesh.redis.delete(key)


async def test_two_wipes_in_a_row_strand_no_paying_order(mesh: WdMesh) -> None:
    await mesh.gateway_admin().SetChannelFaults(gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(
        channel="balance", async_rate=1.0, async_delay_ms=ASYNC_DELAY_MS)), timeout=10)
    uid, method = await mesh.user(balance_fen=700, channel="balance")
    order_id = (await mesh.confirm(uid, method, 700)).order.order_id
    awaiting = mesh.keys.payout_awaiting("balance")

    async def parked() -> bool:
        return await mesh.redis.zscore(awaiting, order_id) is not None

    await eventually(parked, timeout=5, what="the asynchronous payout to be awaited")
    assert await mesh.order_state(order_id) == "PAYING"

    await wipe(mesh)  # the awaited answer is forgotten: only PostgreSQL knows the order waits
    await eventually(parked, timeout=5, what="the order to be followed again after the first wipe")
    await wipe(mesh)  # and once more, while the re-opened job is still in flight

    async def settled() -> str | None:
        state = await mesh.order_state(order_id)
        return state if state in ("SUCCEEDED", "FAILED") else None

    assert await eventually(settled, timeout=ASYNC_DELAY_MS / 1000 + 6,
                            what="the order to settle after the second wipe") == "SUCCEEDED"
    # Exactly once: the gateway holds one payout per order id (its primary key), of the
    # order's amount; the order moved PAYING -> SUCCEEDED once; one debit, no refund.
    paid = (await mesh.gateway().QueryPayout(gw.QueryPayoutRequest(order_id=order_id), timeout=10)).payout
    assert (paid.state, paid.amount_fen) == (gw.PAYOUT_STATE_SUCCEEDED, 700)
    history = await mesh.pool.fetch("SELECT to_state FROM order_history WHERE order_id = $1 ORDER BY id",
                                    order_id)
    assert [h["to_state"] for h in history] == ["PENDING_DEDUCT", "PENDING_PAYOUT", "PAYING", "SUCCEEDED"]
    assert await mesh.entries(order_id) == ["DEBIT"]
    await mesh.ledger_ok([uid])
