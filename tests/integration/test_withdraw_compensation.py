"""The compensation job, one test per starting state, against the real ledger and gateway:
every old non-terminal order ends final, a failed order's debit is refunded exactly once,
a payout is made at most once, and only by payout_svc under the channel's rate: the job
re-queues unpaid orders, it never pays them itself.

No payout_svc runs in this module's mesh, so orders stay where a test put them; a test
that needs its re-queued orders paid starts one for a channel of its own."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.db import connect_schema
from tests.integration.test_payout_pipeline import start_payout
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually
from tools.loadlib.stats import max_in_window

# One channel per test whose orders payout_svc pays, so no test's stream reaches another's.
CHANNELS = "bank,alipay,balance,cdry,cpay,cretry,clock,crate"


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={
        "WITHDRAW_STUCK_BANDS_S": "0,3600", "GATEWAY_CHANNELS": CHANNELS, "WITHDRAW_CHANNELS": CHANNELS,
    })
    yield m
    await m.stop()


@contextlib.asynccontextmanager
async def payout_svc(mesh: WdMesh, channel: str, rate: float | None = None) -> AsyncIterator[None]:
    """payout_svc draining `channel` (no rate: unlimited) while the block runs. Its limiter's
    window is 1 s + 300 ms: between admission and the gateway's clock a call crosses this
    process's one event loop, which every service here shares (see test_payout_processes)."""
    running = await start_payout({
        **mesh.env, "PAYOUT_CHANNELS": channel,
        "PAYOUT_DEFAULT_RATES": f"{channel}:{'unlimited' if rate is None else rate}",
        "PAYOUT_WORKERS_PER_CHANNEL": "4", "PAYOUT_RATE_MARGIN_MS": "300",
        "PAYOUT_CLAIM_IDLE_MS": "1000", "PAYOUT_RETRY_BACKOFF_MS": "20", "PAYOUT_SVC_METRICS_PORT": "0",
    })
    try:
        yield
    finally:
        await running.stop(1.0)


async def published(mesh: WdMesh, order_ids: Sequence[str]) -> None:
    """Wait for the relay to publish the orders' payout jobs (or for them to be closed)."""
    async def probe() -> bool:
        return bool(await mesh.pool.fetchval(
            "SELECT bool_and(published_at IS NOT NULL OR done_at IS NOT NULL) FROM outbox "
            "WHERE kind = 'PAYOUT' AND order_id = ANY($1::text[])", list(order_ids)))

    await eventually(probe, what="the relay to publish the payout jobs")


async def lose_messages(mesh: WdMesh, channel: str, order_ids: Sequence[str]) -> None:
    """The channel's stream loses the orders' messages, as when they were dead-lettered:
    nothing left in it will pay these orders."""
    await published(mesh, order_ids)
    await mesh.redis.delete(mesh.keys.payout_stream(channel))


async def settled(mesh: WdMesh, order_ids: Sequence[str], state: str = "SUCCEEDED",
                  timeout: float = 15.0) -> None:
    async def probe() -> bool:
        return all([await mesh.order_state(o) == state for o in order_ids])

    await eventually(probe, timeout=timeout, interval=0.1, what=f"orders to be {state}")


async def compensate(mesh: WdMesh, dry_run: bool = False) -> dict[str, withdraw_pb2.CompensationAction]:
    reply = await mesh.admin().RunCompensation(withdraw_pb2.RunCompensationRequest(
        dry_run=dry_run, min_age_seconds=0, override_min_age=True), timeout=30)
    assert reply.ran
    return {a.order_id: a for a in reply.actions}


async def pending_deduct_order(mesh: WdMesh, uid: int, method: str, amount: int, *, debited: bool,
                               channel: str = "bank") -> str:
    """An order as a confirm leaves it when it never learned the deduct's outcome."""
    order_id = f"wd-{uuid.uuid4().hex}"
    await mesh.pool.execute(
        "INSERT INTO orders (order_id, uid, request_id, amount_fen, channel, method_id, state, state_reason) "
        "VALUES ($1, $2, $3, $4, $6, $5, 'PENDING_DEDUCT', 'created')",
        order_id, uid, uuid.uuid4().hex, amount, method, channel,
    )
    if debited:  # the debit landed; its reply was lost
        await mesh.account().Deduct(account_pb2.DeductRequest(order_id=order_id, uid=uid, amount_fen=amount),
                                    timeout=10)
    return order_id


async def paying_order(mesh: WdMesh, uid: int, method: str, amount: int) -> str:
    order_id = (await mesh.confirm(uid, method, amount)).order.order_id
    begun = await mesh.coordination().BeginPayout(
        withdraw_pb2.BeginPayoutRequest(order_id=order_id), timeout=10)
    assert begun.acquired
    return order_id


async def gateway_payout(mesh: WdMesh, order_id: str, uid: int, channel: str, method: str,
                         amount: int) -> gateway_pb2.Payout:
    reply = await mesh.gateway().Payout(gateway_pb2.PayoutRequest(
        order_id=order_id, uid=uid, channel=channel, method_id=method, amount_fen=amount), timeout=10)
    return reply.payout


async def payouts_of(mesh: WdMesh, *order_ids: str) -> list[gateway_pb2.Payout]:
    now = datetime.now(UTC)
    start, end = gateway_pb2.ListPayoutsRequest().start_time, gateway_pb2.ListPayoutsRequest().end_time
    start.FromDatetime(now - timedelta(hours=1))
    end.FromDatetime(now + timedelta(hours=1))
    reply = await mesh.gateway().ListPayouts(
        gateway_pb2.ListPayoutsRequest(start_time=start, end_time=end, page_size=5000), timeout=10)
    return [p for p in reply.payouts if p.order_id in order_ids]


async def test_dry_run_lists_and_changes_nothing(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=10_000, channel="cdry")
    deduct = await pending_deduct_order(mesh, uid, method, 300, debited=False, channel="cdry")
    queued = (await mesh.confirm(uid, method, 400)).order.order_id
    paying = await paying_order(mesh, uid, method, 500)
    await lose_messages(mesh, "cdry", [queued, paying])
    # Its message is still in the stream, waiting for a consumer: nothing to re-queue.
    waiting = (await mesh.confirm(uid, method, 600)).order.order_id
    await published(mesh, [waiting])

    actions = await compensate(mesh, dry_run=True)
    assert actions[deduct].action == "fail"
    assert actions[deduct].from_state == withdraw_pb2.ORDER_STATE_PENDING_DEDUCT
    assert actions[queued].action == "requeue_payout" and "would re-queue" in actions[queued].detail
    assert actions[paying].action == "requeue_unpaid" and "no record" in actions[paying].detail
    assert actions[waiting].action == "wait" and "still queued" in actions[waiting].detail
    assert [await mesh.order_state(o) for o in (deduct, queued, paying, waiting)] == [
        "PENDING_DEDUCT", "PENDING_PAYOUT", "PAYING", "PENDING_PAYOUT"]
    assert await mesh.entries(deduct) == []
    assert await payouts_of(mesh, queued, paying, waiting) == []
    assert await mesh.redis.xlen(mesh.keys.payout_stream("cdry")) == 1  # only `waiting`'s
    assert await mesh.balance(uid) == 10_000 - 400 - 500 - 600

    stuck = (await mesh.admin().GetStuckOrders(withdraw_pb2.GetStuckOrdersRequest(), timeout=10)).bands
    counts = {(b.state, b.older_than_seconds): b.count for b in stuck}
    assert counts[(withdraw_pb2.ORDER_STATE_PENDING_PAYOUT, 0)] >= 1
    assert counts[(withdraw_pb2.ORDER_STATE_PAYING, 0)] >= 1
    assert counts[(withdraw_pb2.ORDER_STATE_PENDING_DEDUCT, 0)] >= 1
    assert counts[(withdraw_pb2.ORDER_STATE_PAYING, 3600)] == 0

    # The real run fails the one and hands the others back to payout_svc, which pays them.
    actions = await compensate(mesh)
    assert [actions[o].action for o in (deduct, queued, paying, waiting)] == [
        "fail", "requeue_payout", "requeue_unpaid", "wait"]
    assert await mesh.order_state(deduct) == "FAILED"
    async with payout_svc(mesh, "cdry"):
        await settled(mesh, [queued, paying, waiting])
    assert len(await payouts_of(mesh, queued, paying, waiting)) == 3
    assert not {deduct, queued, paying, waiting} & set(await compensate(mesh))
    await mesh.ledger_ok([uid])


async def test_pending_deduct_without_debit_fails_and_voids(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    order_id = await pending_deduct_order(mesh, uid, method, 300, debited=False)
    action = (await compensate(mesh))[order_id]
    assert action.action == "fail" and "VOIDED" in action.detail
    assert await mesh.order_state(order_id) == "FAILED"
    assert await mesh.entries(order_id) == ["VOID"]
    # A deduct still in flight from the lost confirm can no longer land.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.account().Deduct(account_pb2.DeductRequest(order_id=order_id, uid=uid, amount_fen=300),
                                    timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await mesh.balance(uid) == 1_000
    await mesh.ledger_ok([uid])


async def test_pending_deduct_with_debit_fails_and_refunds_once(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    order_id = await pending_deduct_order(mesh, uid, method, 300, debited=True)
    assert await mesh.balance(uid) == 700
    action = (await compensate(mesh))[order_id]
    assert action.action == "fail_and_refund" and "REFUNDED" in action.detail
    assert order_id not in await compensate(mesh)  # nothing left to do
    assert await mesh.order_state(order_id) == "FAILED"
    assert await mesh.entries(order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 1_000
    await mesh.ledger_ok([uid])


async def test_pending_payout_is_requeued_and_paid_by_payout_svc(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000, channel="cpay")
    order_id = (await mesh.confirm(uid, method, 600)).order.order_id
    await lose_messages(mesh, "cpay", [order_id])
    action = (await compensate(mesh))[order_id]
    assert action.action == "requeue_payout" and "re-queued on cpay" in action.detail
    # The job did not pay: it left that to the payout path.
    assert await mesh.order_state(order_id) == "PENDING_PAYOUT"
    assert await payouts_of(mesh, order_id) == []
    async with payout_svc(mesh, "cpay"):
        await settled(mesh, [order_id])
    payouts = await payouts_of(mesh, order_id)
    assert [(p.state, p.amount_fen) for p in payouts] == [(gateway_pb2.PAYOUT_STATE_SUCCEEDED, 600)]
    assert await mesh.entries(order_id) == ["DEBIT"]
    await mesh.ledger_ok([uid])


async def test_paying_with_gateway_succeeded_adopts_it_without_refund(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    order_id = await paying_order(mesh, uid, method, 450)
    paid = await gateway_payout(mesh, order_id, uid, "bank", method, 450)
    assert paid.state == gateway_pb2.PAYOUT_STATE_SUCCEEDED  # the worker's reply was lost
    action = (await compensate(mesh))[order_id]
    assert action.action == "adopt_succeeded"
    assert await mesh.order_state(order_id) == "SUCCEEDED"
    assert await mesh.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order_id) == 0
    assert await mesh.entries(order_id) == ["DEBIT"]
    assert len(await payouts_of(mesh, order_id)) == 1
    assert await mesh.balance(uid) == 550
    await mesh.ledger_ok([uid])


async def test_paying_with_gateway_failed_adopts_it_and_refunds_once(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000, channel="alipay")
    order_id = await paying_order(mesh, uid, method, 450)
    faults = mesh.gateway_admin()
    await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
        faults=gateway_pb2.ChannelFaults(channel="alipay", definitive_failure_rate=1.0)), timeout=10)
    try:
        paid = await gateway_payout(mesh, order_id, uid, "alipay", method, 450)
    finally:
        await faults.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
            faults=gateway_pb2.ChannelFaults(channel="alipay")), timeout=10)
    assert paid.state == gateway_pb2.PAYOUT_STATE_FAILED
    first, second = await compensate(mesh), await compensate(mesh)
    assert first[order_id].action == "adopt_failed" and "REFUNDED" in first[order_id].detail
    assert order_id not in second
    assert await mesh.order_state(order_id) == "FAILED"
    assert await mesh.entries(order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 1_000
    await mesh.ledger_ok([uid])


async def test_paying_without_gateway_record_is_requeued_and_paid_once(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000, channel="cretry")
    order_id = await paying_order(mesh, uid, method, 350)
    await lose_messages(mesh, "cretry", [order_id])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.gateway().QueryPayout(gateway_pb2.QueryPayoutRequest(order_id=order_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Two runs at once: one holds the job, the other says it did not run.
    replies = await asyncio.gather(*(mesh.admin().RunCompensation(withdraw_pb2.RunCompensationRequest(
        min_age_seconds=0, override_min_age=True), timeout=30) for _ in range(2)))
    ran = [r for r in replies if r.ran]
    assert ran
    actions = [a for r in ran for a in r.actions if a.order_id == order_id]
    assert [a.action for a in actions] == ["requeue_unpaid"]
    assert await payouts_of(mesh, order_id) == []
    # Re-queued and not consumed yet: the next runs add no second copy, first while the job
    # waits for the outbox relay (which lingers a moment for company), then once it is queued.
    runs = await eventually(lambda: compensate(mesh), lambda acts: "still queued" in acts[order_id].detail,
                            what="the re-queued job on the stream")
    again = runs[order_id]
    assert again.action == "wait" and "still queued" in again.detail
    async with payout_svc(mesh, "cretry"):
        await settled(mesh, [order_id])
    assert order_id not in await compensate(mesh)
    assert len(await payouts_of(mesh, order_id)) == 1
    assert await mesh.entries(order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 650
    await mesh.ledger_ok([uid])


async def test_an_order_locked_by_a_payout_worker_is_left_alone(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000, channel="clock")
    order_id = (await mesh.confirm(uid, method, 250)).order.order_id
    await lose_messages(mesh, "clock", [order_id])
    lock = mesh.keys.order_lock(order_id)
    await mesh.redis.set(lock, "payout-worker-7", px=30_000)
    action = (await compensate(mesh))[order_id]
    assert action.action == "wait" and "locked" in action.detail
    assert await mesh.order_state(order_id) == "PENDING_PAYOUT"
    assert await mesh.redis.get(lock) == b"payout-worker-7"  # not released by someone else
    await mesh.redis.delete(lock)
    assert (await compensate(mesh))[order_id].action == "requeue_payout"
    async with payout_svc(mesh, "clock"):
        await settled(mesh, [order_id])


async def test_one_runner_at_a_time(mesh: WdMesh) -> None:
    name = mesh.app().compensation_lock.name
    # Another replica's run holds the lease (meshkit.leader): its row, its term running.
    await mesh.pool.execute(
        "INSERT INTO leases (name, holder, expires_at) "
        "VALUES ($1, 'another-replica', now() + interval '1 minute') ON CONFLICT (name) "
        "DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at", name)
    try:
        reply = await mesh.admin().RunCompensation(withdraw_pb2.RunCompensationRequest(), timeout=10)
        assert not reply.ran and not reply.actions
    finally:
        await mesh.pool.execute("UPDATE leases SET expires_at = now() WHERE name = $1", name)
    assert (await mesh.admin().RunCompensation(withdraw_pb2.RunCompensationRequest(), timeout=10)).ran


async def test_the_sweep_settles_failed_orders_whose_refund_is_pending(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    order_id = await paying_order(mesh, uid, method, 700)
    # FAILED (as a worker would set it), its refund job deferred as after repeated errors.
    async with mesh.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE orders SET state = 'FAILED', failure_reason = 'PAYOUT_FAILED', "
                           "state_reason = 'test' WHERE order_id = $1", order_id)
        await conn.execute("UPDATE outbox SET next_attempt_at = now() + interval '1 hour' "
                           "WHERE kind = 'REFUND' AND order_id = $1", order_id)
    assert await mesh.balance(uid) == 300
    action = (await compensate(mesh))[order_id]
    assert action.action == "refund" and action.from_state == withdraw_pb2.ORDER_STATE_FAILED
    assert "REFUNDED" in action.detail
    assert order_id not in await compensate(mesh)
    assert await mesh.entries(order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 1_000
    await mesh.ledger_ok([uid])


async def test_a_refund_job_another_worker_holds_is_waited_for_not_reported_pending(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    order_id = await paying_order(mesh, uid, method, 700)
    async with mesh.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE orders SET state = 'FAILED', failure_reason = 'PAYOUT_FAILED', "
                           "state_reason = 'test' WHERE order_id = $1", order_id)
        await conn.execute("UPDATE outbox SET next_attempt_at = now() + interval '1 hour' "
                           "WHERE kind = 'REFUND' AND order_id = $1", order_id)
    # A refund relay holds the job (as in the middle of its pass) when the job comes to it.
    relay = await connect_schema(mesh.env["DATABASE_URL"], mesh.env["WITHDRAW_SVC_DB_SCHEMA"])
    try:
        held = relay.transaction()
        await held.start()
        await relay.execute("SELECT 1 FROM outbox WHERE kind = 'REFUND' AND order_id = $1 FOR UPDATE",
                            order_id)
        run = asyncio.ensure_future(compensate(mesh))

        async def waiting_or_done() -> bool:
            return run.done() or bool(await mesh.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"))

        await eventually(waiting_or_done, what="the job to wait for the refund job's lock")
        await held.rollback()  # that relay's refund call failed: the job is still owed
        action = (await run)[order_id]
    finally:
        await relay.close()
    assert action.action == "refund" and "REFUNDED" in action.detail, action
    assert await mesh.entries(order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 1_000
    await mesh.ledger_ok([uid])


async def test_overdue_orders_are_paid_within_the_channel_rate(mesh: WdMesh) -> None:
    # Eight overdue orders, half never begun, half PAYING with no gateway record, on a
    # channel whose quota is 2 payouts a second: however many the job finds at once, the
    # gateway never sees more than 2 calls in any second, and each order is paid once.
    uid, method = await mesh.user(balance_fen=8 * 100, channel="crate")
    queued = [(await mesh.confirm(uid, method, 100)).order.order_id for _ in range(4)]
    paying = [await paying_order(mesh, uid, method, 100) for _ in range(4)]
    orders = queued + paying
    await lose_messages(mesh, "crate", orders)
    async with payout_svc(mesh, "crate", rate=2):
        actions = await compensate(mesh)
        await settled(mesh, orders, timeout=20)
    payouts = await payouts_of(mesh, *orders)
    assert sorted(p.order_id for p in payouts) == sorted(orders)
    assert {p.state for p in payouts} == {gateway_pb2.PAYOUT_STATE_SUCCEEDED}
    calls = [p.request_time.ToDatetime().timestamp() for p in payouts]
    assert max_in_window(calls) <= 2, sorted(calls)
    assert [actions[o].action for o in orders] == ["requeue_payout"] * 4 + ["requeue_unpaid"] * 4
    successes = await mesh.pool.fetch(
        "SELECT order_id, count(*) AS n FROM order_history WHERE to_state = 'SUCCEEDED' "
        "AND order_id = ANY($1::text[]) GROUP BY order_id", orders)
    assert sorted((r["order_id"], r["n"]) for r in successes) == sorted((o, 1) for o in orders)
    for order_id in orders:
        assert await mesh.entries(order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 0
    await mesh.ledger_ok([uid])


async def test_a_confirm_lost_with_its_replica_is_settled_within_a_minute_not_hours(mesh: WdMesh) -> None:
    # A replica SIGKILLed between a confirm's insert and the deduct's answer leaves the order
    # PENDING_DEDUCT, debited or not. A second replica (resolving after 1 s here, a minute by
    # default) settles it as the compensation job would: FAILED, refund iff a debit landed.
    uid, method = await mesh.user(balance_fen=10_000)
    debited = await pending_deduct_order(mesh, uid, method, 300, debited=True)
    never = await pending_deduct_order(mesh, uid, method, 400, debited=False)
    resolver = await mesh.start_withdraw({"WITHDRAW_DEDUCT_RESOLVE_AFTER_S": "1",
                                          "WITHDRAW_DEDUCT_RESOLVE_INTERVAL_S": "1"})
    try:
        await settled(mesh, [debited, never], state="FAILED")

        async def refunds_done() -> dict[str, str] | None:
            rows = await mesh.pool.fetch(
                "SELECT order_id, outcome FROM outbox WHERE kind = 'REFUND' AND order_id = ANY($1::text[])",
                [debited, never])
            outcomes = {r["order_id"]: r["outcome"] for r in rows}
            return outcomes if len(outcomes) == 2 and None not in outcomes.values() else None

        assert await eventually(refunds_done, what="both refund jobs to settle") == {
            debited: "REFUNDED", never: "VOIDED"}
        assert await mesh.entries(debited) == ["DEBIT", "REFUND"]
        assert await mesh.entries(never) == ["VOID"]
        assert await mesh.balance(uid) == 10_000
        await mesh.ledger_ok([uid])
    finally:
        mesh.withdraws.remove(resolver)
        await resolver.stop(1.0)
