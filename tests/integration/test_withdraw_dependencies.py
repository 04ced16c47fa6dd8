"""account_svc down: the page is a weak dependency (answers within its deadline + 100 ms,
balance marked stale); force-credit in confirm is a strong one (UNAVAILABLE, no order); a
deduct whose outcome is unknown is re-driven by the retry with the same request_id."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.withdraw.v1 import withdraw_pb2
from tests.harness import user_metadata
from tests.integration.withdraw_support import WdMesh, reward_token, start_mesh
from tests.waiting import eventually

PAGE_DEADLINE_MS = 200


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={"WITHDRAW_PAGE_CREDIT_DEADLINE_MS": str(PAGE_DEADLINE_MS)})
    yield m
    await m.stop()


async def test_account_down(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=2_000)
    stub = mesh.withdraw()
    await mesh.confirm(uid, method, 300)
    page = await stub.GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=uid), timeout=5,
                                      metadata=user_metadata(uid))
    assert page.balance_fen == 1_700 and not page.balance_stale

    port = await mesh.stop_account()
    session = user_metadata(uid)  # minted before the clock starts: the page's time is measured
    try:
        for tokens in ([], [reward_token(uid, 100)]):
            for _ in range(3):
                started = time.monotonic()
                page = await stub.GetWithdrawPage(
                    withdraw_pb2.GetWithdrawPageRequest(uid=uid, tokens=tokens), timeout=5, metadata=session)
                elapsed_ms = (time.monotonic() - started) * 1000
                assert elapsed_ms <= PAGE_DEADLINE_MS + 100, elapsed_ms
                assert page.balance_stale
                assert page.gate.open and [m.method_id for m in page.methods] == [method]
                assert len(page.recent_orders) == 1

        # Strong force-credit: refused as retryable, and nothing is written.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(uid, method, 500, request_id="with-tokens", tokens=[reward_token(uid, 500)])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry" in (err.value.details() or "")
        assert len(await mesh.order_rows(uid)) == 1

        # Without tokens the order exists before the deduct is attempted: the deduct's
        # outcome is unknown, so the order waits in PENDING_DEDUCT for the retry.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(uid, method, 400, request_id="no-tokens")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        rows = {r["request_id"]: r["state"] for r in await mesh.order_rows(uid)}
        assert rows.get("no-tokens") == "PENDING_DEDUCT" and "with-tokens" not in rows
    finally:
        await mesh.restart_account(port)

    # The retry with the same request_id drives the same order through, debited once.
    async def retried() -> withdraw_pb2.ConfirmWithdrawResponse | None:
        try:
            return await mesh.confirm(uid, method, 400, request_id="no-tokens")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return None

    reply = await eventually(retried, timeout=10, interval=0.2, what="account_svc to come back")
    assert reply.replayed and reply.order.state == withdraw_pb2.ORDER_STATE_PENDING_PAYOUT
    assert await mesh.entries(reply.order.order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 2_000 - 300 - 400
    page = await stub.GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=uid), timeout=5,
                                      metadata=user_metadata(uid))
    assert not page.balance_stale and page.balance_fen == 1_300
    await mesh.ledger_ok([uid])
