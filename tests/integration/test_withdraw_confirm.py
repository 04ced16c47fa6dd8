"""ConfirmWithdraw against real PostgreSQL, Redis, account_svc and gateway_mock: exactly one
debit per order under concurrency, request-id idempotency, validation, queries, the page."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from campaign.tokens import RewardGrant, sign
from mesh.withdraw.v1 import withdraw_pb2
from tests.harness import user_metadata
from tests.integration.withdraw_support import WdMesh, reward_token, start_mesh
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env)
    yield m
    await m.stop()


async def test_200_concurrent_confirms_deduct_exactly_what_the_balance_covers(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=100 * 150)
    results = await asyncio.gather(
        *(mesh.confirm(uid, method, 150, request_id=f"burst-{i}") for i in range(200)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, withdraw_pb2.ConfirmWithdrawResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 100 and len(refused) == 100, [r for r in results if not isinstance(
        r, withdraw_pb2.ConfirmWithdrawResponse | grpc.aio.AioRpcError)]
    assert all(r.order.state == withdraw_pb2.ORDER_STATE_PENDING_PAYOUT for r in ok)
    assert {e.code() for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert all("insufficient balance" in (e.details() or "") for e in refused)
    assert await mesh.balance(uid) == 0

    rows = await mesh.order_rows(uid)
    states = [r["state"] for r in rows]
    assert states.count("PENDING_PAYOUT") == 100 and states.count("FAILED") == 100
    assert {r["failure_reason"] for r in rows if r["state"] == "FAILED"} == {"INSUFFICIENT_BALANCE"}
    # Every PENDING_PAYOUT order holds one debit and one payout job; every FAILED one a refund job.
    jobs = await mesh.pool.fetch(
        "SELECT j.kind, o.state FROM outbox j JOIN orders o USING (order_id) WHERE o.uid = $1", uid
    )
    assert sorted((j["kind"], j["state"]) for j in jobs) == sorted(
        [("PAYOUT", "PENDING_PAYOUT")] * 100 + [("REFUND", "FAILED")] * 100
    )
    debits = await asyncio.gather(
        *(mesh.entries(r["order_id"]) for r in rows if r["state"] == "PENDING_PAYOUT"))
    assert all(kinds == ["DEBIT"] for kinds in debits)
    await mesh.ledger_ok([uid])

    # The refused orders' refund jobs void them at the ledger (no debit to give back).
    async def voided() -> bool:
        n = await mesh.pool.fetchval(
            "SELECT count(*) FROM outbox j JOIN orders o USING (order_id) "
            "WHERE o.uid = $1 AND j.kind = 'REFUND' AND j.outcome = 'VOIDED'", uid)
        return n == 100

    await eventually(voided, what="refund jobs of refused orders to void them")
    await mesh.ledger_ok([uid])


async def test_same_request_id_20_times_concurrently_is_one_order_one_debit(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=10_000)
    results = await asyncio.gather(*(mesh.confirm(uid, method, 700, request_id="same") for _ in range(20)))
    order_ids = {r.order.order_id for r in results}
    assert len(order_ids) == 1
    assert sum(not r.replayed for r in results) == 1
    assert {r.order.state for r in results} == {withdraw_pb2.ORDER_STATE_PENDING_PAYOUT}
    order_id = order_ids.pop()
    assert await mesh.entries(order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 10_000 - 700
    assert len(await mesh.order_rows(uid)) == 1

    again = await mesh.confirm(uid, method, 700, request_id="same")
    assert again.replayed and again.order.order_id == order_id

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.confirm(uid, method, 800, request_id="same")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id" in (err.value.details() or "")
    assert len(await mesh.order_rows(uid)) == 1
    assert await mesh.balance(uid) == 10_000 - 700
    await mesh.ledger_ok([uid])


async def test_insufficient_balance_replays_the_same_refusal(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=100)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(uid, method, 500, request_id="too-much")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "insufficient balance" in (err.value.details() or "")
    rows = await mesh.order_rows(uid)
    assert len(rows) == 1 and rows[0]["state"] == "FAILED"
    assert await mesh.balance(uid) == 100


async def test_tokens_are_credited_before_the_deduct(mesh: WdMesh) -> None:
    uid, method = await mesh.user()
    tokens = [reward_token(uid, 300), reward_token(uid, 250)]
    reply = await mesh.confirm(uid, method, 500, tokens=tokens)
    assert reply.order.state == withdraw_pb2.ORDER_STATE_PENDING_PAYOUT
    assert await mesh.balance(uid) == 50
    await mesh.ledger_ok([uid])


async def test_a_bad_token_refuses_the_confirm_and_writes_nothing(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    other = reward_token(uid + 1, 300)  # someone else's token
    forged = sign(RewardGrant(f"rw-{uuid.uuid4().hex}", uid, 300, "red_packet", int(time.time())),
                  "k1", b"not-the-campaign-secret")
    for token in (other, forged):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(uid, method, 500, tokens=[token])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tokens" in (err.value.details() or "")
    assert await mesh.order_rows(uid) == []
    assert await mesh.balance(uid) == 1_000


@pytest.mark.parametrize(("change", "code", "field"), [
    # uid 0 is the signed-in user's (tests/integration/test_sessions.py); another is not.
    ({"uid": -5}, grpc.StatusCode.PERMISSION_DENIED, "uid"),
    ({"request_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ({"request_id": "r" * 65}, grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ({"amount_fen": 99}, grpc.StatusCode.INVALID_ARGUMENT, "amount_fen"),
    ({"amount_fen": 0}, grpc.StatusCode.INVALID_ARGUMENT, "amount_fen"),
    ({"amount_fen": -1000}, grpc.StatusCode.INVALID_ARGUMENT, "amount_fen"),
    ({"amount_fen": 2_000_001}, grpc.StatusCode.INVALID_ARGUMENT, "amount_fen"),
    ({"method_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "method_id"),
    ({"tokens": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "tokens"),
    ({"method_id": "m-not-mine"}, grpc.StatusCode.FAILED_PRECONDITION, "method_id"),
])
async def test_validation_failures(mesh: WdMesh, change: dict[str, object], code: grpc.StatusCode,
                                   field: str) -> None:
    uid, method = await mesh.user(balance_fen=5_000)
    fields: dict[str, object] = {"uid": uid, "request_id": uuid.uuid4().hex, "amount_fen": 500,
                                 "method_id": method, "tokens": [], **change}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.withdraw().ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(**fields), timeout=10,  # type: ignore[arg-type]
                                              metadata=user_metadata(uid))
    assert err.value.code() == code
    assert field in (err.value.details() or "")
    assert await mesh.order_rows(uid) == []
    assert await mesh.balance(uid) == 5_000


async def test_a_method_bound_to_someone_else_is_refused(mesh: WdMesh) -> None:
    uid, _ = await mesh.user(balance_fen=5_000)
    _, their_method = await mesh.user()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.confirm(uid, their_method, 500)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not bound" in (err.value.details() or "")
    assert await mesh.order_rows(uid) == []


async def test_get_order_has_history_and_list_orders_pages_newest_first(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=100_000)
    created = [(await mesh.confirm(uid, method, 100 + i)).order.order_id for i in range(7)]
    got = await mesh.order(uid, created[0])
    assert got.uid == uid and got.amount_fen == 100 and got.channel == "bank"
    assert [(h.from_state, h.to_state) for h in got.history] == [
        (withdraw_pb2.ORDER_STATE_UNSPECIFIED, withdraw_pb2.ORDER_STATE_PENDING_DEDUCT),
        (withdraw_pb2.ORDER_STATE_PENDING_DEDUCT, withdraw_pb2.ORDER_STATE_PENDING_PAYOUT),
    ]

    seen: list[str] = []
    token = ""
    while True:
        page = await mesh.withdraw().ListOrders(
            withdraw_pb2.ListOrdersRequest(uid=uid, page_size=3, page_token=token), timeout=10,
            metadata=user_metadata(uid))
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(created))

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.order(uid, "wd-nope")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.withdraw().ListOrders(
            withdraw_pb2.ListOrdersRequest(uid=uid, page_token="%%%"), timeout=10,
            metadata=user_metadata(uid))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_page_credits_tokens_and_shows_everything(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    await mesh.confirm(uid, method, 200)
    page = await mesh.withdraw().GetWithdrawPage(
        withdraw_pb2.GetWithdrawPageRequest(uid=uid, tokens=[reward_token(uid, 55)]), timeout=10,
        metadata=user_metadata(uid))
    assert page.balance_fen == 1_000 - 200 + 55 and not page.balance_stale
    assert page.min_amount_fen == 100 and page.max_amount_fen == 2_000_000
    assert page.gate.open
    assert [m.method_id for m in page.methods] == [method]
    assert len(page.recent_orders) == 1 and page.recent_orders[0].amount_fen == 200
    await mesh.ledger_ok([uid])


async def test_a_confirm_whose_caller_gives_up_mid_deduct_still_finishes(mesh: WdMesh) -> None:
    # The account row is held locked from outside, so the deduct waits; the caller's deadline
    # expires meanwhile. The order exists by then: it must not stay PENDING_DEDUCT (the
    # compensation job would find it only hours later) with its debit landed or not.
    uid, method = await mesh.user(balance_fen=1_000)
    schema = mesh.env["ACCOUNT_SVC_DB_SCHEMA"]
    blocker = await asyncpg.connect(mesh.env["DATABASE_URL"])
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute(f'SELECT 1 FROM "{schema}".accounts WHERE uid = $1 FOR UPDATE', uid)
        with pytest.raises(grpc.aio.AioRpcError) as gave_up:
            await mesh.withdraw().ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
                uid=uid, request_id="impatient", amount_fen=300, method_id=method), timeout=0.5,
                metadata=user_metadata(uid))
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        rows = await mesh.order_rows(uid)
        assert [r["state"] for r in rows] == ["PENDING_DEDUCT"]
        await holding.rollback()
    finally:
        await blocker.close()
    order_id = rows[0]["order_id"]

    async def deducted() -> str | None:
        state = await mesh.order_state(order_id)
        return state if state != "PENDING_DEDUCT" else None

    assert await eventually(deducted, what="the abandoned confirm to finish its deduct") == "PENDING_PAYOUT"
    assert await mesh.entries(order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 700
    await mesh.ledger_ok([uid])
