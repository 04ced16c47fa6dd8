"""withdraw_svc with the real payout_svc draining its streams: a confirmed order is paid and
ends SUCCEEDED; a payout the gateway definitively fails ends FAILED with its debit refunded
once. Checks the contract of the outbox stream entry and the coordination RPCs end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2
from tests.integration.test_withdraw_support import WdMesh, eventually, start_mesh


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, payout=True, extra={"PAYOUT_WORKERS_PER_CHANNEL": "2"})
    yield m
    await m.stop()


async def final_order(mesh: WdMesh, uid: int, order_id: str) -> withdraw_pb2.Order:
    async def settled() -> withdraw_pb2.Order | None:
        got = await mesh.order(uid, order_id)
        if got.state == withdraw_pb2.ORDER_STATE_SUCCEEDED:
            return got
        if got.state == withdraw_pb2.ORDER_STATE_FAILED and got.refund_state in ("REFUNDED", "VOIDED"):
            return got
        return None

    return await eventually(settled, timeout=15, interval=0.1, what=f"order {order_id} to settle")


async def test_confirmed_orders_are_paid_by_payout_svc(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=3_000, channel="bank")
    orders = [(await mesh.confirm(uid, method, 500)).order.order_id for _ in range(3)]
    for order_id in orders:
        order = await final_order(mesh, uid, order_id)
        assert order.state == withdraw_pb2.ORDER_STATE_SUCCEEDED
        assert [h.to_state for h in order.history][-2:] == [
            withdraw_pb2.ORDER_STATE_PAYING, withdraw_pb2.ORDER_STATE_SUCCEEDED]
        paid = await mesh.gateway().QueryPayout(gateway_pb2.QueryPayoutRequest(order_id=order_id), timeout=10)
        assert paid.payout.state == gateway_pb2.PAYOUT_STATE_SUCCEEDED and paid.payout.amount_fen == 500
        assert await mesh.entries(order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 1_500
    await mesh.ledger_ok([uid])


async def test_a_definitive_gateway_failure_is_refunded_once(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=3_000, channel="alipay")
    faults = mesh.gateway_admin()
    await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
        faults=gateway_pb2.ChannelFaults(channel="alipay", definitive_failure_rate=1.0)), timeout=10)
    try:
        # The gateway re-reads its faults every few seconds: wait until a payout fails.
        order = await mesh.confirm(uid, method, 800)
        got = await final_order(mesh, uid, order.order.order_id)
    finally:
        await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
            faults=gateway_pb2.ChannelFaults(channel="alipay")), timeout=10)
    assert got.state == withdraw_pb2.ORDER_STATE_FAILED and got.refund_state == "REFUNDED"
    assert got.refund == withdraw_pb2.REFUND_STATE_REFUNDED
    assert await mesh.entries(got.order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 3_000
    await mesh.ledger_ok([uid])
