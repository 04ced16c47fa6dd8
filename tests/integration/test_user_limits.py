"""Abuse limits (issue 13, item 7) over the real services: per-user limits on confirms and
forced credits, shared by the replicas through Redis, and the servers' message-size limit.
A refused call changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.account.v1 import account_pb2
from mesh.withdraw.v1 import withdraw_pb2 as wd
from tests.integration.withdraw_support import WdMesh, code_of, reward_token, start_mesh

CONFIRMS_PER_MIN = 3
CREDITS_PER_MIN = 2


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={
        "WITHDRAW_USER_CONFIRMS_PER_MIN": str(CONFIRMS_PER_MIN),
        "ACCOUNT_USER_CREDITS_PER_MIN": str(CREDITS_PER_MIN),
    })
    await m.start_withdraw()  # a second replica: the limit is per user, not per replica
    yield m
    await m.stop()


def retry_after_ms(err: grpc.aio.AioRpcError) -> int:
    hints = [int(v) for k, v in err.trailing_metadata() or () if k == "retry-after-ms"]
    assert len(hints) == 1, err.trailing_metadata()
    return hints[0]


async def test_confirms_beyond_the_limit_are_refused_and_change_nothing(mesh: WdMesh) -> None:
    # The user's funds come from the ledger's own credit path, not ForceCredit's limit.
    uid, method = await mesh.user(channel="bank")
    await mesh.fund(uid, 5_000)
    for index in range(CONFIRMS_PER_MIN):
        await mesh.confirm(uid, method, 100, index=index % 2)
    refused_id = uuid.uuid4().hex
    for index in (0, 1):  # both replicas refuse: they share the counter
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(uid, method, 100, request_id=refused_id, index=index)
        assert code_of(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many withdrawals for this user; retry after" in (err.value.details() or "")
        assert 0 < retry_after_ms(err.value) <= 60_000
    rows = await mesh.order_rows(uid)
    assert len(rows) == CONFIRMS_PER_MIN
    assert refused_id not in {r["request_id"] for r in rows}
    assert await mesh.balance(uid) == 5_000 - CONFIRMS_PER_MIN * 100
    # Another user is not held back by this one.
    other, other_method = await mesh.user(balance_fen=500, channel="bank")
    assert (await mesh.confirm(other, other_method, 100)).order.uid == other
    await mesh.ledger_ok([uid, other])


async def test_forced_credits_beyond_the_limit_are_refused_and_credit_nothing(mesh: WdMesh) -> None:
    uid, method = await mesh.user(channel="bank")
    account = mesh.account()
    for _ in range(CREDITS_PER_MIN):
        await account.ForceCredit(account_pb2.ForceCreditRequest(uid=uid, tokens=[reward_token(uid, 300)]),
                                  timeout=10)
    assert await mesh.balance(uid) == CREDITS_PER_MIN * 300
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await account.ForceCredit(account_pb2.ForceCreditRequest(uid=uid, tokens=[reward_token(uid, 300)]),
                                  timeout=10)
    assert code_of(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many forced credits for this user" in (err.value.details() or "")
    assert 0 < retry_after_ms(err.value) <= 60_000
    # The app's confirm carrying tokens meets the same limit, with the hint passed on.
    request_id = uuid.uuid4().hex
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.confirm(uid, method, 100, request_id=request_id, tokens=[reward_token(uid, 300)])
    assert code_of(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < retry_after_ms(err.value) <= 60_000
    assert await mesh.order_rows(uid) == []
    assert await mesh.balance(uid) == CREDITS_PER_MIN * 300
    # Reading the balance (ForceCredit without tokens) is not a credit: never limited.
    reply = await account.ForceCredit(account_pb2.ForceCreditRequest(uid=uid), timeout=10)
    assert reply.balance_fen == CREDITS_PER_MIN * 300
    await mesh.ledger_ok([uid])


async def test_a_message_over_the_size_limit_is_refused_and_changes_nothing(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000, channel="bank")
    huge = "x" * (5 * 1024 * 1024)  # over the default 4 MiB a server receives
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.withdraw().ConfirmWithdraw(wd.ConfirmWithdrawRequest(
            uid=uid, request_id=huge, amount_fen=100, method_id=method), timeout=10)
    assert code_of(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.account().Deduct(account_pb2.DeductRequest(order_id=huge, uid=uid, amount_fen=100),
                                    timeout=10)
    assert code_of(err.value) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await mesh.order_rows(uid) == []
    assert await mesh.balance(uid) == 1_000
    await mesh.ledger_ok([uid])
