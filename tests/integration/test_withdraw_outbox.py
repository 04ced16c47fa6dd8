"""The payout outbox relay (stream entries, Redis wipe recovery, stale republish) and the
payout coordination RPCs (BeginPayout CAS, SettlePayout with its refund job, terminal states)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from mesh.payout.v1 import payout_pb2
from mesh.withdraw.v1 import withdraw_pb2
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={"WITHDRAW_REPUBLISH_AFTER_S": "1",
                                          "WITHDRAW_REPUBLISH_CHECK_S": "1"})
    yield m
    await m.stop()


async def stream_jobs(mesh: WdMesh, channel: str, order_id: str) -> list[tuple[payout_pb2.PayoutJob, str]]:
    entries: Any = await mesh.redis.xrange(mesh.keys.payout_stream(channel))
    found = []
    for _id, fields in entries:
        job = payout_pb2.PayoutJob.FromString(fields[b"job"])
        if job.order_id == order_id:
            found.append((job, fields.get(b"traceparent", b"").decode()))
    return found


async def test_a_confirmed_order_reaches_its_channel_stream(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=5_000, channel="alipay")
    order = (await mesh.confirm(uid, method, 1_234)).order

    async def published() -> list[tuple[payout_pb2.PayoutJob, str]]:
        return await stream_jobs(mesh, "alipay", order.order_id)

    jobs = await eventually(published, timeout=5, what="the payout job on the alipay stream")
    assert len(jobs) == 1
    job, traceparent = jobs[0]
    assert (job.uid, job.channel, job.method_id, job.amount_fen, job.attempt) == (
        uid, "alipay", method, 1_234, 0)
    assert job.enqueue_time.seconds > 0
    assert TRACEPARENT.match(traceparent), traceparent

    async def marked() -> asyncpg.Record | None:
        return await mesh.pool.fetchrow("SELECT stream_id FROM outbox WHERE order_id = $1 AND kind = 'PAYOUT'"
                                        " AND published_at IS NOT NULL", order.order_id)

    # XADD happens inside the transaction that marks the job published; wait for its commit.
    row = await eventually(marked, timeout=5, what="the job to be marked published")
    assert row["stream_id"]

    # Redis loses everything: streams and epoch. The relay notices and republishes.
    async for key in mesh.redis.scan_iter(match=f"{mesh.keys.prefix}:*"):
        await mesh.redis.delete(key)
    jobs = await eventually(published, timeout=5, what="the job to be republished after the wipe")
    assert len(jobs) == 1 and jobs[0][0].amount_fen == 1_234
    assert await mesh.redis.get(mesh.keys.epoch()) is not None

    # PAYING: the job stays open until the order settles, so a wipe brings it back (the
    # gateway's pending answer was followed only in Redis); the worker will ask the
    # gateway before paying.
    begun = await mesh.coordination().BeginPayout(
        withdraw_pb2.BeginPayoutRequest(order_id=order.order_id), timeout=10)
    assert begun.acquired
    job_row = await mesh.pool.fetchrow("SELECT done_at, outcome FROM outbox WHERE order_id = $1 "
                                       "AND kind = 'PAYOUT'", order.order_id)
    assert job_row["done_at"] is None and job_row["outcome"] is None
    async for key in mesh.redis.scan_iter(match=f"{mesh.keys.prefix}:*"):
        await mesh.redis.delete(key)
    jobs = await eventually(published, timeout=5, what="the PAYING order's job after the wipe")
    assert len(jobs) == 1

    # Terminal: the job is closed for good and no wipe brings it back.
    await mesh.coordination().SettlePayout(withdraw_pb2.SettlePayoutRequest(
        order_id=order.order_id, result=withdraw_pb2.PAYOUT_RESULT_SUCCEEDED), timeout=10)
    async for key in mesh.redis.scan_iter(match=f"{mesh.keys.prefix}:*"):
        await mesh.redis.delete(key)
    await eventually(lambda: mesh.redis.get(mesh.keys.epoch()), timeout=5, what="a new epoch")
    await mesh.app().outbox.tick()
    assert await published() == []
    done = await mesh.pool.fetchrow("SELECT done_at, outcome FROM outbox WHERE order_id = $1 "
                                    "AND kind = 'PAYOUT'", order.order_id)
    assert done["done_at"] is not None and done["outcome"] == "DONE"


async def test_jobs_delivered_long_ago_go_out_again_queued_ones_do_not(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=5_000, channel="balance")
    stream = mesh.keys.payout_stream("balance")
    await mesh.redis.xgroup_create(stream, "payout", id="$", mkstream=True)
    first = (await mesh.confirm(uid, method, 100)).order.order_id
    await eventually(lambda: stream_jobs(mesh, "balance", first), timeout=5, what="first job")
    # A consumer takes it and loses it (crash + dead-letter...): the order still waits.
    taken: Any = await mesh.redis.xreadgroup("payout", "lost-worker", {stream: ">"}, count=10)
    assert taken
    await mesh.redis.xack(stream, "payout", *[i for i, _ in taken[0][1]])
    second = (await mesh.confirm(uid, method, 200)).order.order_id
    await eventually(lambda: stream_jobs(mesh, "balance", second), timeout=5, what="second job")

    async def first_republished() -> bool:
        return len(await stream_jobs(mesh, "balance", first)) >= 2

    await eventually(first_republished, timeout=8, what="the lost job to be republished")
    # The second job still waits in the group's backlog: republishing it would only add load.
    assert len(await stream_jobs(mesh, "balance", second)) == 1


async def test_begin_payout_is_a_compare_and_set(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=5_000)
    order = (await mesh.confirm(uid, method, 900)).order
    coordination = mesh.coordination()
    replies = await asyncio.gather(*(
        coordination.BeginPayout(withdraw_pb2.BeginPayoutRequest(order_id=order.order_id), timeout=10)
        for _ in range(10)
    ))
    assert sum(r.acquired for r in replies) == 1
    assert {r.order.state for r in replies} == {withdraw_pb2.ORDER_STATE_PAYING}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coordination.BeginPayout(withdraw_pb2.BeginPayoutRequest(order_id="wd-unknown"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_settle_failed_refunds_exactly_once(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=5_000)
    order = (await mesh.confirm(uid, method, 800)).order
    coordination = mesh.coordination()
    await coordination.BeginPayout(withdraw_pb2.BeginPayoutRequest(order_id=order.order_id), timeout=10)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coordination.SettlePayout(withdraw_pb2.SettlePayoutRequest(order_id=order.order_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "result" in (err.value.details() or "")

    failed = await asyncio.gather(*(
        coordination.SettlePayout(withdraw_pb2.SettlePayoutRequest(
            order_id=order.order_id, result=withdraw_pb2.PAYOUT_RESULT_FAILED, reason="closed account"),
            timeout=10)
        for _ in range(5)
    ))
    assert sum(not r.replayed for r in failed) == 1
    assert {r.order.state for r in failed} == {withdraw_pb2.ORDER_STATE_FAILED}
    # The refund job was written with the transition (it exists whatever the relay did since).
    assert await mesh.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order.order_id) == 1

    async def refunded() -> bool:
        return (await mesh.order(uid, order.order_id)).refund_state == "REFUNDED"

    await eventually(refunded, timeout=5, what="the refund relay to refund")
    await mesh.app().refunds.process([order.order_id])  # a second pass finds nothing to do
    assert await mesh.entries(order.order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 5_000
    await mesh.ledger_ok([uid])

    # Terminal: the other result is refused, the same one is a no-op, SQL cannot change it.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coordination.SettlePayout(withdraw_pb2.SettlePayoutRequest(
            order_id=order.order_id, result=withdraw_pb2.PAYOUT_RESULT_SUCCEEDED), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for state in ("SUCCEEDED", "PAYING", "PENDING_PAYOUT"):
        with pytest.raises(asyncpg.CheckViolationError):
            await mesh.pool.execute("UPDATE orders SET state = $2 WHERE order_id = $1", order.order_id, state)
    with pytest.raises(asyncpg.CheckViolationError):
        await mesh.pool.execute("UPDATE orders SET amount_fen = 1 WHERE order_id = $1", order.order_id)
    assert await mesh.order_state(order.order_id) == "FAILED"


async def test_settle_succeeded(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=5_000)
    order = (await mesh.confirm(uid, method, 600)).order
    coordination = mesh.coordination()
    succeeded = withdraw_pb2.SettlePayoutRequest(
        order_id=order.order_id, result=withdraw_pb2.PAYOUT_RESULT_SUCCEEDED)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # not PAYING yet
        await coordination.SettlePayout(succeeded, timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await coordination.BeginPayout(withdraw_pb2.BeginPayoutRequest(order_id=order.order_id), timeout=10)
    first = await coordination.SettlePayout(succeeded, timeout=10)
    again = await coordination.SettlePayout(succeeded, timeout=10)
    assert not first.replayed and again.replayed
    assert first.order.state == withdraw_pb2.ORDER_STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coordination.SettlePayout(withdraw_pb2.SettlePayoutRequest(
            order_id=order.order_id, result=withdraw_pb2.PAYOUT_RESULT_FAILED), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await mesh.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order.order_id) == 0
    history = (await mesh.order(uid, order.order_id)).history
    assert [h.to_state for h in history] == [
        withdraw_pb2.ORDER_STATE_PENDING_DEDUCT, withdraw_pb2.ORDER_STATE_PENDING_PAYOUT,
        withdraw_pb2.ORDER_STATE_PAYING, withdraw_pb2.ORDER_STATE_SUCCEEDED,
    ]
    # Every transition is on the change feed too, in the same transaction.
    feed = await mesh.pool.fetch("SELECT payload->>'state' AS state FROM changes "
                                 "WHERE kind = 'order' AND key = $1 ORDER BY id", order.order_id)
    assert [r["state"] for r in feed] == ["PENDING_DEDUCT", "PENDING_PAYOUT", "PAYING", "SUCCEEDED"]
