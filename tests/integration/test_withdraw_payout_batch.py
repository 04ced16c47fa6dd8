"""BeginPayoutBatch / SettlePayoutBatch: one statement for many orders, each keeping its
own compare-and-set, replay and refusal; the triggers still write history and refund jobs
per row; bad input and oversized batches are INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.withdraw.v1 import withdraw_pb2 as wd
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env)
    yield m
    await m.stop()


async def orders(mesh: WdMesh, n: int, amount_fen: int = 300) -> tuple[int, list[str]]:
    uid, method = await mesh.user(balance_fen=n * amount_fen)
    return uid, [(await mesh.confirm(uid, method, amount_fen)).order.order_id for _ in range(n)]


async def test_begin_batch_is_a_compare_and_set_per_order(mesh: WdMesh) -> None:
    uid, ids = await orders(mesh, 3)
    coordination = mesh.coordination()
    await coordination.BeginPayout(wd.BeginPayoutRequest(order_id=ids[0]), timeout=10)
    # Two batches race over the same orders: each order is acquired exactly once.
    replies = await asyncio.gather(*(
        coordination.BeginPayoutBatch(wd.BeginPayoutBatchRequest(order_ids=[*ids, "wd-nope"]), timeout=10)
        for _ in range(4)
    ))
    for reply in replies:
        assert len(reply.results) == 4
        assert [r.begun.order.order_id for r in reply.results[:3]] == ids
        assert {r.begun.order.state for r in reply.results[:3]} == {wd.ORDER_STATE_PAYING}
        missing = reply.results[3]
        assert missing.WhichOneof("outcome") == "error"
        assert (missing.error.code, missing.error.reason) == ("NOT_FOUND", "ORDER_NOT_FOUND")
    acquired = [sum(reply.results[i].begun.acquired for reply in replies) for i in range(3)]
    assert acquired == [0, 1, 1]  # the first was begun by the single RPC
    for order_id in ids:
        got = await mesh.order(uid, order_id)
        assert [h.to_state for h in got.history].count(wd.ORDER_STATE_PAYING) == 1


async def test_begin_batch_answers_a_repeated_id_as_a_repeat(mesh: WdMesh) -> None:
    _uid, ids = await orders(mesh, 1)
    reply = await mesh.coordination().BeginPayoutBatch(
        wd.BeginPayoutBatchRequest(order_ids=[ids[0], ids[0]]), timeout=10)
    assert [r.begun.acquired for r in reply.results] == [True, False]


async def test_settle_batch_mixed_results_refund_per_row(mesh: WdMesh) -> None:
    uid, ids = await orders(mesh, 4, amount_fen=500)
    paid, failed, not_paying, failed_early = ids
    coordination = mesh.coordination()
    await coordination.BeginPayoutBatch(wd.BeginPayoutBatchRequest(order_ids=[paid, failed]), timeout=10)
    ok, fail = wd.PAYOUT_RESULT_SUCCEEDED, wd.PAYOUT_RESULT_FAILED
    request = wd.SettlePayoutBatchRequest(settles=[
        wd.SettlePayoutRequest(order_id=paid, result=ok),
        wd.SettlePayoutRequest(order_id=failed, result=fail, reason="closed account"),
        wd.SettlePayoutRequest(order_id=not_paying, result=ok),  # PENDING_PAYOUT: refused alone
        wd.SettlePayoutRequest(order_id=failed_early, result=fail, reason="unbound"),
        wd.SettlePayoutRequest(order_id=paid, result=ok),  # repeat of the first item
        wd.SettlePayoutRequest(order_id=paid, result=fail),  # the other result: refused
    ])
    first = await coordination.SettlePayoutBatch(request, timeout=10)
    kinds = [r.WhichOneof("outcome") for r in first.results]
    assert kinds == ["settled", "settled", "error", "settled", "settled", "error"]
    assert [r.settled.replayed for r in first.results if r.HasField("settled")] == [False, False, False, True]
    assert first.results[0].settled.order.state == wd.ORDER_STATE_SUCCEEDED
    assert first.results[1].settled.order.state == wd.ORDER_STATE_FAILED
    assert first.results[1].settled.order.refund_state == "PENDING"
    assert first.results[1].settled.order.failure_reason == "PAYOUT_FAILED"
    assert (first.results[2].error.code, first.results[2].error.reason) == ("FAILED_PRECONDITION",
                                                                            "ORDER_NOT_PAYING")
    assert (first.results[5].error.code, first.results[5].error.reason) == ("FAILED_PRECONDITION",
                                                                            "ORDER_TERMINAL")
    assert await mesh.order_state(not_paying) == "PENDING_PAYOUT"
    # A replay of the whole batch writes nothing more and answers the same per item.
    again = await coordination.SettlePayoutBatch(request, timeout=10)
    assert [r.WhichOneof("outcome") for r in again.results] == kinds
    assert [r.settled.replayed for r in again.results[:2]] == [True, True]
    for order_id, refunds in ((paid, 0), (failed, 1), (failed_early, 1), (not_paying, 0)):
        assert await mesh.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order_id) == refunds
    history = (await mesh.order(uid, failed)).history
    assert [h.to_state for h in history][-1:] == [wd.ORDER_STATE_FAILED]
    assert history[-1].reason == "PAYOUT_FAILED: closed account"

    async def refunded() -> bool:
        return await mesh.balance(uid) == 2 * 500  # 4 x 500 debited, 2 refunded

    await eventually(refunded, timeout=5, what="both failed orders refunded")
    await mesh.ledger_ok([uid])


async def test_bad_items_are_refused_alone_and_oversized_batches_whole(mesh: WdMesh) -> None:
    _uid, ids = await orders(mesh, 1)
    coordination = mesh.coordination()
    reply = await coordination.BeginPayoutBatch(
        wd.BeginPayoutBatchRequest(order_ids=["bad id", ids[0]]), timeout=10)
    assert reply.results[0].error.code == "INVALID_ARGUMENT"
    assert reply.results[1].begun.acquired
    settled = await coordination.SettlePayoutBatch(wd.SettlePayoutBatchRequest(settles=[
        wd.SettlePayoutRequest(order_id=ids[0]),  # no result
        wd.SettlePayoutRequest(order_id=ids[0], result=wd.PAYOUT_RESULT_FAILED, reason="a\x00b"),
    ]), timeout=10)
    assert [(r.error.code, r.error.reason) for r in settled.results] == [
        ("INVALID_ARGUMENT", "BAD_RESULT"), ("INVALID_ARGUMENT", "BAD_REASON")]
    assert await mesh.order_state(ids[0]) == "PAYING"
    for call in (
        coordination.BeginPayoutBatch(wd.BeginPayoutBatchRequest(order_ids=ids * 501), timeout=10),
        coordination.SettlePayoutBatch(wd.SettlePayoutBatchRequest(settles=[
            wd.SettlePayoutRequest(order_id=ids[0], result=wd.PAYOUT_RESULT_SUCCEEDED)] * 501), timeout=10),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 500" in (err.value.details() or "")
    assert await mesh.order_state(ids[0]) == "PAYING"
