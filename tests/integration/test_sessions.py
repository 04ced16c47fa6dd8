"""End-user identity on the user-facing RPCs (issue #13 item 3), against real PostgreSQL,
Redis, account_svc, withdraw_svc and gateway_mock: every RPC acts only for the uid of its
session token; another user's uid, order or ledger is refused; expired, tampered, wrongly
signed and unsigned tokens sign in nobody; and a refused call changes nothing."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import jwt
import pytest

from edge import sessions
from edge.client import bearer_metadata
from edge.sessions import SessionKeys, issue
from mesh.account.v1 import account_pb2
from mesh.withdraw.v1 import withdraw_pb2
from tests.harness import SESSION_SECRET_1, SESSION_SECRET_2, user_metadata
from tests.integration.withdraw_support import WdMesh, start_mesh

Metadata = tuple[tuple[str, str], ...]
# One user-facing call: (stub owner, uid in the body, metadata) -> the RPC's awaitable.
Call = Callable[[WdMesh, int, Metadata], Awaitable[Any]]


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env)
    yield m
    await m.stop()


def _page(m: WdMesh, uid: int, md: Metadata) -> Awaitable[Any]:
    return m.withdraw().GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=uid), timeout=10, metadata=md)


def _list(m: WdMesh, uid: int, md: Metadata) -> Awaitable[Any]:
    return m.withdraw().ListOrders(withdraw_pb2.ListOrdersRequest(uid=uid), timeout=10, metadata=md)


def _balance(m: WdMesh, uid: int, md: Metadata) -> Awaitable[Any]:
    return m.account().GetBalance(account_pb2.GetBalanceRequest(uid=uid), timeout=10, metadata=md)


def _bill(m: WdMesh, uid: int, md: Metadata) -> Awaitable[Any]:
    return m.account().ListEntries(account_pb2.ListEntriesRequest(uid=uid), timeout=10, metadata=md)


def _confirm_call(method_id: str, amount_fen: int = 300) -> Call:
    def call(m: WdMesh, uid: int, md: Metadata) -> Awaitable[Any]:
        return m.withdraw().ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
            uid=uid, request_id=uuid.uuid4().hex, amount_fen=amount_fen, method_id=method_id,
        ), timeout=10, metadata=md)

    return call


def _get_order_call(order_id: str) -> Call:
    def call(m: WdMesh, uid: int, md: Metadata) -> Awaitable[Any]:
        return m.withdraw().GetOrder(withdraw_pb2.GetOrderRequest(order_id=order_id), timeout=10, metadata=md)

    return call


async def _refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def _snapshot(m: WdMesh, uids: list[int]) -> dict[str, Any]:
    """What a refused call must leave as it was: orders, ledger entries, outbox, payouts."""
    orders = await m.pool.fetchval("SELECT count(*) FROM orders WHERE uid = ANY($1::bigint[])", uids)
    jobs = await m.pool.fetchval("SELECT count(*) FROM outbox")
    balances = [await m.balance(uid) for uid in uids]
    entries = [len((await _bill(m, uid, user_metadata(uid))).entries) for uid in uids]
    return {"orders": orders, "jobs": jobs, "balances": balances, "entries": entries}


def _tampered_sub(token: str, uid: int) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(uid)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _alg_none(uid: int) -> str:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"sub": str(uid), "aud": "wallet-mesh", "iat": now, "exp": now + 600, "jti": "none"}
    return f"{b64({'alg': 'none', 'kid': 's1', 'typ': 'JWT'})}.{b64(claims)}."


async def test_every_user_facing_rpc_without_a_token_is_unauthenticated(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    order = (await mesh.confirm(uid, method, 200)).order
    before = await _snapshot(mesh, [uid])
    calls: dict[str, Call] = {
        "GetWithdrawPage": _page, "ConfirmWithdraw": _confirm_call(method), "ListOrders": _list,
        "GetOrder": _get_order_call(order.order_id), "GetBalance": _balance, "ListEntries": _bill,
    }
    for name, call in calls.items():
        for md in ((), (("authorization", "Basic dXNlcjpwdw=="),), (("authorization", "Bearer "),)):
            err = await _refused(call(mesh, uid, md))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (name, md, err)
            assert "authorization" in (err.details() or "") or "missing" in (err.details() or ""), name
    assert await _snapshot(mesh, [uid]) == before


async def test_a_token_of_user_a_acts_for_nobody_else(mesh: WdMesh) -> None:
    a, method_a = await mesh.user(balance_fen=5_000)
    b, method_b = await mesh.user(balance_fen=5_000)
    order_b = (await mesh.confirm(b, method_b, 400)).order
    before = await _snapshot(mesh, [a, b])
    as_a = user_metadata(a)
    body_uid_calls: dict[str, Call] = {
        "GetWithdrawPage": _page, "ListOrders": _list, "GetBalance": _balance, "ListEntries": _bill,
        # B's own method, and A's: neither may be spent from B's balance with A's session.
        "ConfirmWithdraw(B's method)": _confirm_call(method_b),
        "ConfirmWithdraw(A's method)": _confirm_call(method_a),
    }
    for name, call in body_uid_calls.items():
        err = await _refused(call(mesh, b, as_a))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (name, err)
        assert f"uid {b} is not the signed-in user's" in (err.details() or ""), name
    assert await _snapshot(mesh, [a, b]) == before

    # B's order with A's token reads exactly like an order that does not exist.
    err = await _refused(_get_order_call(order_b.order_id)(mesh, 0, as_a))
    missing_id = order_b.order_id[:-4] + "zzzz"
    missing = await _refused(_get_order_call(missing_id)(mesh, 0, as_a))
    assert err.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert (err.details() or "").replace(order_b.order_id, "<id>") == \
        (missing.details() or "").replace(missing_id, "<id>")
    # B's own session reads it.
    got = await _get_order_call(order_b.order_id)(mesh, 0, user_metadata(b))
    assert got.order.uid == b


async def test_uid_absent_means_the_signed_in_user_and_lists_never_show_another(mesh: WdMesh) -> None:
    a, method_a = await mesh.user(balance_fen=5_000)
    b, method_b = await mesh.user(balance_fen=5_000)
    for _ in range(2):
        await mesh.confirm(b, method_b, 100)
    # uid 0 in the body: A's session confirms for A.
    mine = await _confirm_call(method_a, 250)(mesh, 0, user_metadata(a))
    assert mine.order.uid == a
    assert await mesh.balance(a) == 5_000 - 250 and await mesh.balance(b) == 5_000 - 200

    listed = await _list(mesh, 0, user_metadata(a))
    assert [o.order_id for o in listed.orders] == [mine.order.order_id]
    page = await _page(mesh, 0, user_metadata(a))
    assert [o.uid for o in page.recent_orders] == [a] and page.balance_fen == 5_000 - 250
    balance = await _balance(mesh, 0, user_metadata(a))
    assert (balance.uid, balance.balance_fen) == (a, 5_000 - 250)
    bill = await _bill(mesh, 0, user_metadata(a))
    assert bill.entries and {e.uid for e in bill.entries} == {a}
    assert len((await _list(mesh, b, user_metadata(b))).orders) == 2


async def test_expired_tampered_wrong_key_and_unsigned_tokens_sign_in_nobody(mesh: WdMesh) -> None:
    a, method_a = await mesh.user(balance_fen=5_000)
    b, _ = await mesh.user(balance_fen=5_000)
    before = await _snapshot(mesh, [a, b])
    keys = SessionKeys({"s1": SESSION_SECRET_1.encode()}, "s1")
    now = time.time()
    tokens = {
        "expired": issue(keys, a, now=now - 3600, lifetime_s=600),
        # A's token with its subject turned into B, the signature kept.
        "tampered": _tampered_sub(issue(keys, a, now=now), b),
        "wrong key": issue(SessionKeys({"s1": b"x" * 40}, "s1"), a, now=now),
        "unknown key id": issue(SessionKeys({"s9": b"y" * 40}, "s9"), a, now=now),
        "alg=none": _alg_none(a),
        "not a jwt": "not.a.jwt",
    }
    for label, token in tokens.items():
        md = bearer_metadata(token)
        for name, call in {"ConfirmWithdraw": _confirm_call(method_a), "GetBalance": _balance,
                           "ListOrders": _list, "ListEntries": _bill, "GetWithdrawPage": _page}.items():
            for body_uid in (0, a, b):
                err = await _refused(call(mesh, body_uid, md))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (label, name, err)
                assert "session token" in (err.details() or ""), (label, err.details())
                assert token not in (err.details() or "")
    assert await _snapshot(mesh, [a, b]) == before
    expired = await _refused(_balance(mesh, a, bearer_metadata(tokens["expired"])))
    assert "expired" in (expired.details() or "")


async def test_key_rotation_old_key_verifies_while_listed_not_after_removal(mesh: WdMesh) -> None:
    uid, _ = await mesh.user(balance_fen=700)
    old_key = SessionKeys({"s2": SESSION_SECRET_2.encode()}, "s2")
    old_token = bearer_metadata(issue(old_key, uid, now=time.time()))
    # This run lists s1 (active) and s2: a token s2 signed still verifies.
    assert (await _list(mesh, uid, old_token)).orders == []
    assert jwt.get_unverified_header(user_metadata(uid)[0][1].split()[1])["kid"] == "s1"
    # A replica that no longer lists s2 refuses it, and still takes s1's tokens.
    index = len(mesh.withdraws)
    await mesh.start_withdraw({"SESSION_TOKEN_KEYS": f"s1:{SESSION_SECRET_1}"})
    stub = mesh.withdraw(index)
    err = await _refused(stub.ListOrders(withdraw_pb2.ListOrdersRequest(uid=uid), timeout=10,
                                         metadata=old_token))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown key id 's2'" in (err.details() or "")
    fresh = await stub.ListOrders(withdraw_pb2.ListOrdersRequest(uid=uid), timeout=10,
                                  metadata=user_metadata(uid))
    assert fresh.orders == []


async def test_services_read_orders_and_balances_without_a_user_only_where_listed(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=900)
    order = (await mesh.confirm(uid, method, 300)).order
    request = withdraw_pb2.GetOrderRequest(order_id=order.order_id)
    for service in ("recon_svc", "payout_svc"):
        got = await mesh.withdraw(caller=service).GetOrder(request, timeout=10)
        assert got.order.uid == uid
    balance = await mesh.account(caller="withdraw_svc").GetBalance(
        account_pb2.GetBalanceRequest(uid=uid), timeout=10)
    assert balance.balance_fen == 600
    # Not listed: the payout worker may read orders, not confirm, list or read a bill. A
    # service the caller policy does not list is refused before the session is looked at;
    # the app edge itself still needs the user's token.
    denied = grpc.StatusCode.PERMISSION_DENIED
    for call, code in (
        (mesh.withdraw(caller="payout_svc").ListOrders(withdraw_pb2.ListOrdersRequest(uid=uid), timeout=10),
         denied),
        (mesh.account(caller="recon_svc").GetBalance(account_pb2.GetBalanceRequest(uid=uid), timeout=10),
         denied),
        (mesh.account(caller="withdraw_svc").ListEntries(account_pb2.ListEntriesRequest(uid=uid), timeout=10),
         denied),
        (mesh.withdraw(caller="app-edge").GetOrder(request, timeout=10), grpc.StatusCode.UNAUTHENTICATED),
        (mesh.withdraw(caller="account_svc").GetOrder(request, timeout=10), denied),
    ):
        assert (await _refused(call)).code() == code


async def test_mesh_env_dev_without_keys_uses_the_dev_key_and_says_so(
    mesh: WdMesh, caplog: pytest.LogCaptureFixture
) -> None:
    uid, _ = await mesh.user(balance_fen=300)
    index = len(mesh.withdraws)
    with caplog.at_level(logging.WARNING, logger="meshkit.secrets"):
        await mesh.start_withdraw({"SESSION_TOKEN_KEYS": "", "SESSION_TOKEN_ACTIVE_KEY": "",
                                   "MESH_ENV": "dev"})
    assert any("SESSION_TOKEN_KEYS is not set" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    stub = mesh.withdraw(index)
    dev = SessionKeys({sessions.DEV_KEY_ID: sessions.DEV_KEY}, sessions.DEV_KEY_ID)
    listed = await stub.ListOrders(withdraw_pb2.ListOrdersRequest(uid=uid), timeout=10,
                                   metadata=bearer_metadata(issue(dev, uid, now=time.time())))
    assert listed.orders == []
    # This run's real keys mean nothing to a dev replica.
    err = await _refused(stub.ListOrders(withdraw_pb2.ListOrdersRequest(uid=uid), timeout=10,
                                         metadata=user_metadata(uid)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
