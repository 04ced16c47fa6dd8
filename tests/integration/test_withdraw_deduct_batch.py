"""Confirms' deducts travel to account_svc in shared DeductBatch calls: each order still
gets its own result and its own single debit, one user's refusal never fails another's
order, and a batch whose outcome is unknown leaves every one of its orders PENDING_DEDUCT
for the retry with the same request_id (never failed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.withdraw.v1 import withdraw_pb2
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    # A short linger makes batches form even when this machine is busy with other tests.
    m = await start_mesh(mesh_env, extra={"WITHDRAW_DEDUCT_LINGER_MS": "5"})
    yield m
    await m.stop()


async def test_concurrent_confirms_share_batches_and_keep_their_own_results(mesh: WdMesh) -> None:
    rich, rich_method = await mesh.user(balance_fen=50 * 100)
    poor, poor_method = await mesh.user(balance_fen=20 * 100)
    deducts = mesh.app().confirm.deducts
    calls_before, items_before = deducts.batches, deducts.items

    calls = []
    for i in range(50):  # interleaved, so most batches carry both users' orders
        calls.append(mesh.confirm(rich, rich_method, 100, request_id=f"rich-{i}"))
        calls.append(mesh.confirm(poor, poor_method, 100, request_id=f"poor-{i}"))
    results = await asyncio.gather(*calls, return_exceptions=True)

    rich_results, poor_results = results[0::2], results[1::2]
    assert all(isinstance(r, withdraw_pb2.ConfirmWithdrawResponse) for r in rich_results), rich_results
    poor_ok = [r for r in poor_results if isinstance(r, withdraw_pb2.ConfirmWithdrawResponse)]
    poor_refused = [r for r in poor_results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(poor_ok) == 20 and len(poor_refused) == 30
    assert {e.code() for e in poor_refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert all("insufficient balance" in (e.details() or "") for e in poor_refused)
    # The deducts really were coalesced: fewer calls than orders, some carrying many.
    assert deducts.items - items_before == 100
    assert deducts.batches - calls_before < 100 and deducts.largest > 1

    for uid, expected in ((rich, 50), (poor, 20)):
        states = [r["state"] for r in await mesh.order_rows(uid)]
        assert states.count("PENDING_PAYOUT") == expected
        assert states.count("FAILED") == 50 - expected
        assert await mesh.balance(uid) == 0
    for reply in [*rich_results, *poor_ok]:
        assert isinstance(reply, withdraw_pb2.ConfirmWithdrawResponse)
        assert await mesh.entries(reply.order.order_id) == ["DEBIT"]
    await mesh.ledger_ok([rich, poor])


async def test_a_batch_with_unknown_outcome_leaves_every_order_pending_for_the_retry(
    mesh: WdMesh,
) -> None:
    uid, method = await mesh.user(balance_fen=30 * 100)
    port = await mesh.stop_account()
    try:
        results = await asyncio.gather(
            *(mesh.confirm(uid, method, 100, request_id=f"down-{i}") for i in range(30)),
            return_exceptions=True,
        )
        assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results
        assert {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)} == {
            grpc.StatusCode.UNAVAILABLE}
        states = [r["state"] for r in await mesh.order_rows(uid)]
        assert states == ["PENDING_DEDUCT"] * 30
    finally:
        await mesh.restart_account(port)

    async def retried(i: int) -> withdraw_pb2.ConfirmWithdrawResponse | None:
        try:
            return await mesh.confirm(uid, method, 100, request_id=f"down-{i}")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return None

    async def all_through() -> list[withdraw_pb2.ConfirmWithdrawResponse] | None:
        replies = await asyncio.gather(*(retried(i) for i in range(30)))
        return None if any(r is None for r in replies) else [r for r in replies if r is not None]

    replies = await eventually(all_through, timeout=10, interval=0.2, what="account_svc to come back")
    assert all(r.replayed and r.order.state == withdraw_pb2.ORDER_STATE_PENDING_PAYOUT for r in replies)
    assert len({r.order.order_id for r in replies}) == 30
    for reply in replies:
        assert await mesh.entries(reply.order.order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 0
    await mesh.ledger_ok([uid])
