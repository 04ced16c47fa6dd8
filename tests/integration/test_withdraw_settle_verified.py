"""Defence in depth on the money path (issue 13, item 4), over the real services: a FAILED
settlement of an order is accepted only once withdraw_svc has asked the gateway itself, and
account_svc refunds only an order withdraw_svc holds FAILED. No payout_svc here: the tests
play it (BeginPayout, the gateway's Payout, SettlePayout) so that they can also lie."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2 as wd
from tests.integration.withdraw_support import WdMesh, _start, code_of, start_mesh
from tests.waiting import eventually

SUCCEEDED, FAILED = wd.PAYOUT_RESULT_SUCCEEDED, wd.PAYOUT_RESULT_FAILED


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env)
    yield m
    await m.stop()


async def paying_order(mesh: WdMesh, channel: str = "bank", amount_fen: int = 700) -> tuple[int, str, str]:
    """(uid, method_id, order_id) of a fresh order moved to PAYING, as payout_svc would."""
    uid, method = await mesh.user(balance_fen=2_000, channel=channel)
    order = (await mesh.confirm(uid, method, amount_fen)).order
    begun = await mesh.coordination().BeginPayout(wd.BeginPayoutRequest(order_id=order.order_id), timeout=10)
    assert begun.acquired and begun.order.state == wd.ORDER_STATE_PAYING
    return uid, method, order.order_id


async def pay(mesh: WdMesh, uid: int, method: str, order_id: str, channel: str = "bank",
              amount_fen: int = 700) -> gateway_pb2.Payout:
    reply = await mesh.gateway().Payout(gateway_pb2.PayoutRequest(
        order_id=order_id, uid=uid, channel=channel, method_id=method, amount_fen=amount_fen), timeout=10)
    return reply.payout


async def settle(mesh: WdMesh, order_id: str, result: int, reason: str = "") -> wd.SettlePayoutResponse:
    return await mesh.coordination().SettlePayout(
        wd.SettlePayoutRequest(order_id=order_id, result=result, reason=reason), timeout=10)


async def refund_done(mesh: WdMesh, uid: int, order_id: str) -> wd.Order:
    async def done() -> wd.Order | None:
        order = await mesh.order(uid, order_id)
        return order if order.refund_state in ("REFUNDED", "VOIDED") else None

    return await eventually(done, timeout=15, interval=0.1, what=f"the refund of {order_id}")


async def test_a_forged_failure_of_a_paid_order_is_refused_and_nothing_changes(mesh: WdMesh) -> None:
    uid, method, order_id = await paying_order(mesh)
    assert (await pay(mesh, uid, method, order_id)).state == gateway_pb2.PAYOUT_STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await settle(mesh, order_id, FAILED, "closed account (forged)")
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert "gateway paid it (SUCCEEDED)" in (err.value.details() or "")
    assert await mesh.order_state(order_id) == "PAYING"
    assert await mesh.entries(order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 1_300
    outbox = await mesh.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order_id)
    assert outbox == 0
    # The truth still settles normally.
    settled = await settle(mesh, order_id, SUCCEEDED)
    assert settled.order.state == wd.ORDER_STATE_SUCCEEDED and not settled.replayed
    assert await mesh.entries(order_id) == ["DEBIT"]
    await mesh.ledger_ok([uid])


async def test_a_forged_failure_of_a_payout_in_progress_is_refused(mesh: WdMesh) -> None:
    faults = mesh.gateway_admin()
    await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(faults=gateway_pb2.ChannelFaults(
        channel="alipay", async_rate=1.0, async_delay_ms=600_000)), timeout=10)
    try:
        uid, method, order_id = await paying_order(mesh, channel="alipay")
        payout = await pay(mesh, uid, method, order_id, channel="alipay")
    finally:
        await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
            faults=gateway_pb2.ChannelFaults(channel="alipay")), timeout=10)
    assert payout.state == gateway_pb2.PAYOUT_STATE_PROCESSING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await settle(mesh, order_id, FAILED)
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert "PROCESSING" in (err.value.details() or "")
    assert await mesh.order_state(order_id) == "PAYING"
    assert await mesh.entries(order_id) == ["DEBIT"]


async def test_a_genuine_failure_is_accepted_and_refunded_once(mesh: WdMesh) -> None:
    faults = mesh.gateway_admin()
    await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(faults=gateway_pb2.ChannelFaults(
        channel="balance", definitive_failure_rate=1.0)), timeout=10)
    try:
        uid, method, order_id = await paying_order(mesh, channel="balance")
        payout = await pay(mesh, uid, method, order_id, channel="balance")
    finally:
        await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
            faults=gateway_pb2.ChannelFaults(channel="balance")), timeout=10)
    assert payout.state == gateway_pb2.PAYOUT_STATE_FAILED
    first = await settle(mesh, order_id, FAILED, payout.failure_reason)
    assert first.order.state == wd.ORDER_STATE_FAILED and not first.replayed
    again = await settle(mesh, order_id, FAILED, payout.failure_reason)
    assert again.replayed
    order = await refund_done(mesh, uid, order_id)
    assert order.refund_state == "REFUNDED"
    assert await mesh.entries(order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 2_000
    # A second Refund is a replay of the first: the money comes back once.
    replay = await mesh.account().Refund(account_pb2.RefundRequest(order_id=order_id), timeout=10)
    assert replay.replayed and replay.outcome == account_pb2.REFUND_OUTCOME_REFUNDED
    assert await mesh.balance(uid) == 2_000
    await mesh.ledger_ok([uid])


async def test_a_batch_asks_the_gateway_and_judges_each_order(mesh: WdMesh) -> None:
    uid_paid, method_paid, paid = await paying_order(mesh)
    await pay(mesh, uid_paid, method_paid, paid)
    uid_lost, _, unpaid = await paying_order(mesh)  # no gateway record: a refused payout
    uid_ok, method_ok, ok = await paying_order(mesh)
    await pay(mesh, uid_ok, method_ok, ok)
    reply = await mesh.coordination().SettlePayoutBatch(wd.SettlePayoutBatchRequest(settles=[
        wd.SettlePayoutRequest(order_id=paid, result=FAILED, reason="forged"),
        wd.SettlePayoutRequest(order_id=unpaid, result=FAILED, reason="method unbound"),
        wd.SettlePayoutRequest(order_id=ok, result=SUCCEEDED),
        # The refused item changed nothing: the truth, later in the same batch, settles.
        wd.SettlePayoutRequest(order_id=paid, result=SUCCEEDED),
    ]), timeout=10)
    refused, failed, succeeded, truth = reply.results
    assert refused.error.code == "FAILED_PRECONDITION" and refused.error.reason == "GATEWAY_DISAGREES"
    assert failed.settled.order.state == wd.ORDER_STATE_FAILED
    assert succeeded.settled.order.state == wd.ORDER_STATE_SUCCEEDED
    assert truth.settled.order.state == wd.ORDER_STATE_SUCCEEDED and not truth.settled.replayed
    assert (await refund_done(mesh, uid_lost, unpaid)).refund_state == "REFUNDED"
    assert await mesh.entries(paid) == ["DEBIT"]
    assert await mesh.entries(ok) == ["DEBIT"]
    await mesh.ledger_ok([uid_paid, uid_lost, uid_ok])


async def test_refund_of_an_order_that_did_not_fail_is_refused(mesh: WdMesh) -> None:
    uid, method, order_id = await paying_order(mesh)
    account = mesh.account()
    for label in ("PAYING", "SUCCEEDED"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await account.Refund(account_pb2.RefundRequest(order_id=order_id), timeout=10)
        assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
        assert f"is {label} in withdraw_svc" in (err.value.details() or "")
        assert await mesh.entries(order_id) == ["DEBIT"]
        assert await mesh.balance(uid) == 1_300
        if label == "PAYING":
            await pay(mesh, uid, method, order_id)
            await settle(mesh, order_id, SUCCEEDED)
    # An order id withdraw_svc never made cannot even be voided (it would block nothing).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await account.Refund(account_pb2.RefundRequest(order_id="wd-made-up-by-a-caller"), timeout=10)
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert await mesh.entries("wd-made-up-by-a-caller") == []
    await mesh.ledger_ok([uid])


async def test_gateway_down_answers_unavailable_and_changes_nothing(mesh_env: dict[str, str]) -> None:
    m = await start_mesh(mesh_env)
    try:
        uid, method, order_id = await paying_order(m)
        _, _, other = await paying_order(m)
        port = m.gateway_srv.port
        await m.gateway_srv.stop(0.5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await settle(m, order_id, FAILED, "closed account")
        assert code_of(err.value) == grpc.StatusCode.UNAVAILABLE
        reply = await m.coordination().SettlePayoutBatch(wd.SettlePayoutBatchRequest(settles=[
            wd.SettlePayoutRequest(order_id=other, result=FAILED)]), timeout=10)
        assert reply.results[0].error.code == "UNAVAILABLE"
        for oid in (order_id, other):
            assert await m.order_state(oid) == "PAYING"
            assert await m.entries(oid) == ["DEBIT"]
        # Back again: the gateway has no record of either, so the failure is confirmed.
        m.gateway_srv = await _start("gateway_mock", m.env, port=port)

        async def settled_once_reachable() -> wd.SettlePayoutResponse | None:
            # As payout_svc does: UNAVAILABLE is tried again (the channel reconnects).
            try:
                return await settle(m, order_id, FAILED, "closed account")
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return None

        settled = await eventually(settled_once_reachable, timeout=15, interval=0.2, what="the gateway back")
        assert settled.order.state == wd.ORDER_STATE_FAILED
        assert (await refund_done(m, uid, order_id)).refund_state == "REFUNDED"
        assert await m.balance(uid) == 2_000
        assert method
    finally:
        await m.stop()


async def test_order_states_tell_the_ledger_what_withdraw_svc_holds(mesh: WdMesh) -> None:
    _uid, _method, paying = await paying_order(mesh)
    reply = await mesh.coordination().GetOrderStates(
        wd.GetOrderStatesRequest(order_ids=[paying, "no-such-order"]), timeout=10)
    assert dict(reply.states) == {paying: wd.ORDER_STATE_PAYING}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.coordination().GetOrderStates(
            wd.GetOrderStatesRequest(order_ids=[f"o-{i}" for i in range(501)]), timeout=10)
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "order_ids" in (err.value.details() or "")
