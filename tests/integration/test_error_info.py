"""Refusals arrive with a google.rpc.ErrorInfo (reason, domain) next to the unchanged code
and message, from real withdraw_svc and account_svc servers; withdraw_svc decides an order's
failure reason from the ledger's ErrorInfo reason, not from its message."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.account.v1 import account_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.status import error_info
from tests.harness import user_metadata
from tests.integration.test_withdraw_support import WdMesh, start_mesh


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env)
    yield m
    await m.stop()


async def test_a_confirm_beyond_the_balance_carries_insufficient_balance(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=100)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.confirm(uid, method, 500)
    err = refused.value
    info = error_info(err)
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (err.details() or "").startswith("insufficient balance")
    assert info is not None and (info.reason, info.domain) == ("INSUFFICIENT_BALANCE", "withdraw_svc")
    # The ledger's reason, read from its ErrorInfo, is what the order records.
    [row] = await mesh.order_rows(uid)
    assert (row["state"], row["failure_reason"]) == ("FAILED", "INSUFFICIENT_BALANCE")


@pytest.mark.parametrize(("change", "code", "reason"), [
    ({"amount_fen": 99}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_AMOUNT"),
    ({"tokens": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_TOKENS"),
    ({"method_id": "m-not-mine"}, grpc.StatusCode.FAILED_PRECONDITION, "METHOD_NOT_BOUND"),
])
async def test_bad_input_carries_its_reason(mesh: WdMesh, change: dict[str, object],
                                            code: grpc.StatusCode, reason: str) -> None:
    uid, method = await mesh.user(balance_fen=5_000)
    fields: dict[str, object] = {"uid": uid, "request_id": uuid.uuid4().hex, "amount_fen": 500,
                                 "method_id": method, "tokens": [], **change}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.withdraw().ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(**fields), timeout=10,  # type: ignore[arg-type]
                                              metadata=user_metadata(uid))
    info = error_info(refused.value)
    assert refused.value.code() is code
    assert info is not None and (info.reason, info.domain) == (reason, "withdraw_svc")
    assert await mesh.order_rows(uid) == []


async def test_the_ledger_names_itself_as_the_domain(mesh: WdMesh) -> None:
    uid, _ = await mesh.user(balance_fen=100)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.account(caller="withdraw_svc").Deduct(
            account_pb2.DeductRequest(order_id=f"wd-{uuid.uuid4().hex}", uid=uid, amount_fen=500), timeout=10)
    info = error_info(refused.value)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert info is not None and (info.reason, info.domain) == ("INSUFFICIENT_BALANCE", "account_svc")
    assert await mesh.balance(uid) == 100
