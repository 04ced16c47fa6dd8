"""gateway_mock against real PostgreSQL: idempotency, capacity, injected faults, async
completion across a restart, listing, validation. The fault tests use channels of their
own (gwa, gwb) so gateways other test modules run on the same database never see them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest

from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from mesh.gateway.v1 import gateway_pb2 as gw
from mesh.gateway.v1 import gateway_pb2_grpc as gw_grpc
from meshkit.db import connect_schema
from meshkit.server import RunningServer
from meshkit.timeconv import to_ts, utcnow
from tests import harness
from tests.harness import new_id, new_uid, start_service
from tests.waiting import eventually

CHANNELS = "bank,alipay,balance,gwa,gwb"
ENV = {"GATEWAY_CHANNELS": CHANNELS, "GATEWAY_SWEEP_INTERVAL_S": "0.1", "GATEWAY_FAULTS_REFRESH_S": "0.5"}


class Gateway:
    def __init__(self, running: RunningServer) -> None:
        self.running = running
        self.channel = harness.channel(running.address)
        self.api = gw_grpc.GatewayServiceStub(self.channel)
        self.admin = gw_grpc.GatewayAdminServiceStub(self.channel)
        self.feed = feed_pb2_grpc.ChangeFeedServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.running.stop(1.0)


async def open_gateway() -> Gateway:
    saved = os.environ.get("GATEWAY_MOCK_ADDR")
    running = await start_service("gateway_mock", ENV)
    # Other modules' services keep finding their own gateway.
    if saved is None:
        os.environ.pop("GATEWAY_MOCK_ADDR", None)
    else:
        os.environ["GATEWAY_MOCK_ADDR"] = saved
    return Gateway(running)


@pytest.fixture(scope="module")
async def gateway(mesh_env: dict[str, str]) -> AsyncIterator[Gateway]:
    gateway = await open_gateway()
    yield gateway
    await gateway.close()


@pytest.fixture(scope="module")
async def db(mesh_env: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect_schema(mesh_env["DATABASE_URL"], "gateway")
    yield conn
    await conn.close()


async def set_faults(gateway: Gateway, channel: str, **kwargs: Any) -> gw.ChannelFaults:
    reply = await gateway.admin.SetChannelFaults(
        gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(channel=channel, **kwargs)))
    return reply.faults


@pytest.fixture
async def faults(gateway: Gateway) -> AsyncIterator[Callable[..., Awaitable[gw.ChannelFaults]]]:
    """Set faults on a test channel; every channel touched is reset afterwards."""
    touched: set[str] = set()

    async def apply(channel: str, **kwargs: Any) -> gw.ChannelFaults:
        touched.add(channel)
        return await set_faults(gateway, channel, **kwargs)

    yield apply
    for channel in touched:
        await set_faults(gateway, channel)


async def bind(gateway: Gateway, uid: int, channel: str) -> str:
    reply = await gateway.api.BindMethod(
        gw.BindMethodRequest(uid=uid, channel=channel, account="6222020200112233445", method_id=new_id("m")))
    return str(reply.method.method_id)


def request(
    uid: int, channel: str, method_id: str, amount: int = 1000, order_id: str = ""
) -> gw.PayoutRequest:
    return gw.PayoutRequest(order_id=order_id or new_id("o"), uid=uid, channel=channel,
                            method_id=method_id, amount_fen=amount)


async def status_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def rows_of(db: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM payouts WHERE order_id = $1", order_id)


async def test_payout_is_idempotent_per_order(gateway: Gateway, db: asyncpg.Connection) -> None:
    uid = new_uid()
    method = await bind(gateway, uid, "bank")
    req = request(uid, "bank", method, 1234)
    first = await gateway.api.Payout(req)
    assert first.payout.state == gw.PAYOUT_STATE_SUCCEEDED and not first.replayed
    again = await gateway.api.Payout(req)
    assert again.replayed and again.payout == first.payout

    changed = request(uid, "bank", method, 1235, order_id=req.order_id)
    assert await status_of(gateway.api.Payout(changed)) == grpc.StatusCode.ALREADY_EXISTS
    rows = await rows_of(db, req.order_id)
    assert len(rows) == 1 and rows[0]["amount_fen"] == 1234
    queried = await gateway.api.QueryPayout(gw.QueryPayoutRequest(order_id=req.order_id))
    assert queried.payout == first.payout


async def test_concurrent_repeats_record_one_payout(gateway: Gateway, db: asyncpg.Connection) -> None:
    uid = new_uid()
    method = await bind(gateway, uid, "bank")
    req = request(uid, "bank", method)
    replies = await asyncio.gather(*(gateway.api.Payout(req) for _ in range(8)))
    assert sum(not r.replayed for r in replies) == 1
    assert len({r.payout.create_time.ToNanoseconds() for r in replies}) == 1
    assert len(await rows_of(db, req.order_id)) == 1


async def test_capacity_exhausted_records_nothing(
    gateway: Gateway, faults: Any, db: asyncpg.Connection
) -> None:
    await faults("gwa", capacity_per_second=3)
    uid = new_uid()
    method = await bind(gateway, uid, "gwa")
    reqs = [request(uid, "gwa", method) for _ in range(6)]
    codes = await asyncio.gather(*(status_of(gateway.api.Payout(r)) for r in reqs))
    assert codes.count(grpc.StatusCode.OK) == 3
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3
    for req, code in zip(reqs, codes, strict=True):
        assert len(await rows_of(db, req.order_id)) == (1 if code == grpc.StatusCode.OK else 0)


async def test_transient_error_records_nothing(gateway: Gateway, faults: Any, db: asyncpg.Connection) -> None:
    await faults("gwa", transient_error_rate=1.0)
    uid = new_uid()
    req = request(uid, "gwa", await bind(gateway, uid, "gwa"))
    assert await status_of(gateway.api.Payout(req)) == grpc.StatusCode.UNAVAILABLE
    assert await status_of(gateway.api.QueryPayout(gw.QueryPayoutRequest(order_id=req.order_id))) \
        == grpc.StatusCode.NOT_FOUND
    assert await rows_of(db, req.order_id) == []


async def test_lost_reply_records_the_payout(gateway: Gateway, faults: Any, db: asyncpg.Connection) -> None:
    await faults("gwa", lost_reply_rate=1.0)
    uid = new_uid()
    req = request(uid, "gwa", await bind(gateway, uid, "gwa"))
    assert await status_of(gateway.api.Payout(req)) == grpc.StatusCode.UNAVAILABLE
    queried = await gateway.api.QueryPayout(gw.QueryPayoutRequest(order_id=req.order_id))
    assert queried.payout.state == gw.PAYOUT_STATE_SUCCEEDED
    # The caller retries blindly: still one payout.
    assert await status_of(gateway.api.Payout(req)) == grpc.StatusCode.UNAVAILABLE
    await faults("gwa")
    replay = await gateway.api.Payout(req)
    assert replay.replayed and replay.payout == queried.payout
    assert len(await rows_of(db, req.order_id)) == 1


async def test_definitive_failure(gateway: Gateway, faults: Any) -> None:
    await faults("gwa", definitive_failure_rate=1.0)
    uid = new_uid()
    req = request(uid, "gwa", await bind(gateway, uid, "gwa"))
    reply = await gateway.api.Payout(req)
    assert reply.payout.state == gw.PAYOUT_STATE_FAILED
    assert reply.payout.failure_reason == "account closed"
    await faults("gwa")
    # A failure is final too: paying the same order again returns the failure.
    again = await gateway.api.Payout(req)
    assert again.replayed and again.payout.state == gw.PAYOUT_STATE_FAILED


async def poll_state(gateway: Gateway, order_id: str, want: int, timeout: float = 5.0) -> gw.Payout:
    async def payout() -> gw.Payout:
        return (await gateway.api.QueryPayout(gw.QueryPayoutRequest(order_id=order_id))).payout
    return await eventually(payout, lambda p: p.state == want, timeout=timeout,
                            what=f"payout {order_id} in state {gw.PayoutState.Name(want)}")


async def test_async_payout_completes_after_delay(gateway: Gateway, faults: Any) -> None:
    await faults("gwa", async_rate=1.0, async_delay_ms=500)
    uid = new_uid()
    method = await bind(gateway, uid, "gwa")
    ok, bad = request(uid, "gwa", method), request(uid, "gwa", method)
    reply = await gateway.api.Payout(ok)
    assert reply.payout.state == gw.PAYOUT_STATE_PROCESSING
    queried = await gateway.api.QueryPayout(gw.QueryPayoutRequest(order_id=ok.order_id))
    assert queried.payout.state == gw.PAYOUT_STATE_PROCESSING
    await faults("gwa", async_rate=1.0, async_delay_ms=300, async_failure_rate=1.0)
    assert (await gateway.api.Payout(bad)).payout.state == gw.PAYOUT_STATE_PROCESSING

    done = await poll_state(gateway, ok.order_id, gw.PAYOUT_STATE_SUCCEEDED)
    assert done.state == gw.PAYOUT_STATE_SUCCEEDED
    elapsed = done.complete_time.ToNanoseconds() - done.create_time.ToNanoseconds()
    assert elapsed >= 500_000_000
    failed = await poll_state(gateway, bad.order_id, gw.PAYOUT_STATE_FAILED)
    assert failed.state == gw.PAYOUT_STATE_FAILED and failed.failure_reason == "account closed"


async def test_async_completion_and_faults_survive_restart(gateway: Gateway, db: asyncpg.Connection) -> None:
    first = await open_gateway()
    try:
        configured = await set_faults(first, "gwb", capacity_per_second=77, async_rate=1.0,
                                      async_delay_ms=1200, latency_min_ms=1, latency_max_ms=2)
        uid = new_uid()
        req = request(uid, "gwb", await bind(first, uid, "gwb"))
        assert (await first.api.Payout(req)).payout.state == gw.PAYOUT_STATE_PROCESSING
    finally:
        await first.close()

    second = await open_gateway()
    try:
        got = await second.admin.GetChannelFaults(gw.GetChannelFaultsRequest(channel="gwb"))
        assert got.faults == configured
        # Nobody queries: the sweeper of the new process must finalize it on its own.
        async def state() -> str:
            return str((await rows_of(db, req.order_id))[0]["state"])
        await eventually(state, lambda s: s != "PROCESSING", timeout=5.0, what="the sweeper to finalize it")
        assert (await rows_of(db, req.order_id))[0]["state"] == "SUCCEEDED"
        queried = await second.api.QueryPayout(gw.QueryPayoutRequest(order_id=req.order_id))
        assert queried.payout.state == gw.PAYOUT_STATE_SUCCEEDED
    finally:
        await set_faults(second, "gwb")
        await second.close()


async def test_list_payouts_pages_oldest_first(gateway: Gateway) -> None:
    uid = new_uid()
    method = await bind(gateway, uid, "balance")
    start = utcnow()
    ids = []
    for _ in range(7):
        reply = await gateway.api.Payout(request(uid, "balance", method))
        ids.append(reply.payout.order_id)
    end = utcnow()
    seen: list[gw.Payout] = []
    token = ""
    pages = 0
    while True:
        page = await gateway.api.ListPayouts(gw.ListPayoutsRequest(
            start_time=to_ts(start), end_time=to_ts(end), page_size=3, page_token=token))
        pages += 1
        seen.extend(p for p in page.payouts if p.uid == uid)
        token = page.next_page_token
        if not token:
            break
    assert [p.order_id for p in seen] == ids
    assert pages == 3
    keys = [(p.create_time.ToNanoseconds(), p.order_id) for p in seen]
    assert keys == sorted(keys)
    # The range end is exclusive and nothing before start shows up.
    later = await gateway.api.ListPayouts(gw.ListPayoutsRequest(start_time=to_ts(end)))
    assert not {p.order_id for p in later.payouts} & set(ids)
    assert await status_of(gateway.api.ListPayouts(gw.ListPayoutsRequest(page_token="%%%"))) \
        == grpc.StatusCode.INVALID_ARGUMENT


async def test_bind_method_is_idempotent_and_masked(gateway: Gateway) -> None:
    uid = new_uid()
    method_id = new_id("m")
    bind_req = gw.BindMethodRequest(uid=uid, channel="alipay", account="user@example.com9876",
                                    method_id=method_id)
    first = await gateway.api.BindMethod(bind_req)
    assert first.method.display == "****9876"
    assert (await gateway.api.BindMethod(bind_req)).method == first.method
    other = gw.BindMethodRequest(uid=uid + 1, channel="alipay", account="x1234", method_id=method_id)
    assert await status_of(gateway.api.BindMethod(other)) == grpc.StatusCode.ALREADY_EXISTS
    generated = await gateway.api.BindMethod(gw.BindMethodRequest(uid=uid, channel="bank", account="12"))
    assert generated.method.method_id and generated.method.display == "****"
    listed = await gateway.api.ListMethods(gw.ListMethodsRequest(uid=uid))
    assert {m.method_id for m in listed.methods} == {method_id, generated.method.method_id}


async def test_list_methods_pages_in_binding_order(gateway: Gateway) -> None:
    uid = new_uid()
    bound = []
    for i in range(3):
        reply = await gateway.api.BindMethod(gw.BindMethodRequest(uid=uid, channel="bank", account=f"6222{i}",
                                                                  method_id=new_id("m")))
        bound.append(reply.method.method_id)
    first = await gateway.api.ListMethods(gw.ListMethodsRequest(uid=uid, page_size=2))
    assert [m.method_id for m in first.methods] == bound[:2] and first.next_page_token
    rest = await gateway.api.ListMethods(gw.ListMethodsRequest(uid=uid, page_size=2,
                                                               page_token=first.next_page_token))
    assert [m.method_id for m in rest.methods] == bound[2:] and rest.next_page_token == ""


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("order_id", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("uid", 0, grpc.StatusCode.INVALID_ARGUMENT),
        ("channel", "pigeon", grpc.StatusCode.INVALID_ARGUMENT),
        ("amount_fen", 0, grpc.StatusCode.INVALID_ARGUMENT),
        ("amount_fen", -5, grpc.StatusCode.INVALID_ARGUMENT),
        ("method_id", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("method_id", "m-not-bound", grpc.StatusCode.FAILED_PRECONDITION),
        ("channel", "alipay", grpc.StatusCode.FAILED_PRECONDITION),  # method is bound on bank
    ],
)
async def test_payout_validation(
    gateway: Gateway, db: asyncpg.Connection, field: str, value: Any, code: grpc.StatusCode
) -> None:
    uid = new_uid()
    req = request(uid, "bank", await bind(gateway, uid, "bank"))
    setattr(req, field, value)
    assert await status_of(gateway.api.Payout(req)) == code
    assert await rows_of(db, req.order_id) == []


async def test_payout_with_someone_elses_method_is_refused(gateway: Gateway) -> None:
    owner, thief = new_uid(), new_uid()
    req = request(thief, "bank", await bind(gateway, owner, "bank"))
    assert await status_of(gateway.api.Payout(req)) == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "faults",
    [
        {"channel": "gwa", "transient_error_rate": 1.5},
        {"channel": "gwa", "lost_reply_rate": -0.1},
        {"channel": "gwa", "latency_min_ms": 50, "latency_max_ms": 10},
        {"channel": "gwa", "capacity_per_second": -1},
        {"channel": "gwa", "definitive_failure_rate": 0.6, "async_rate": 0.6},
        {"channel": "pigeon"},
    ],
)
async def test_bad_faults_are_refused_and_change_nothing(gateway: Gateway, faults: dict[str, Any]) -> None:
    before = await gateway.admin.GetChannelFaults(gw.GetChannelFaultsRequest(channel="gwa"))
    code = await status_of(gateway.admin.SetChannelFaults(
        gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(**faults))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    after = await gateway.admin.GetChannelFaults(gw.GetChannelFaultsRequest(channel="gwa"))
    assert after == before


async def test_queries_validate_input(gateway: Gateway) -> None:
    assert await status_of(gateway.api.QueryPayout(gw.QueryPayoutRequest())) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert await status_of(gateway.api.QueryPayout(gw.QueryPayoutRequest(order_id=new_id("none")))) \
        == grpc.StatusCode.NOT_FOUND
    assert await status_of(gateway.api.ListMethods(gw.ListMethodsRequest(uid=0))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert await status_of(gateway.admin.GetChannelFaults(gw.GetChannelFaultsRequest(channel="x"))) \
        == grpc.StatusCode.INVALID_ARGUMENT


async def test_query_payouts_answers_many_orders_in_one_call(gateway: Gateway, faults: Any) -> None:
    await faults("gwa", async_rate=1.0, async_delay_ms=300)
    uid = new_uid()
    bank, slow = await bind(gateway, uid, "bank"), await bind(gateway, uid, "gwa")
    paid = (await gateway.api.Payout(request(uid, "bank", bank, 700))).payout
    pending = (await gateway.api.Payout(request(uid, "gwa", slow, 800))).payout
    assert pending.state == gw.PAYOUT_STATE_PROCESSING
    nobody = [new_id("none"), new_id("none")]
    ids = [nobody[0], pending.order_id, paid.order_id, nobody[1], paid.order_id]
    reply = await gateway.api.QueryPayouts(gw.QueryPayoutsRequest(order_ids=ids))
    assert [p.order_id for p in reply.payouts] == [pending.order_id, paid.order_id]
    assert list(reply.missing_order_ids) == nobody
    assert reply.payouts[1] == paid
    assert (reply.payouts[0].state, reply.payouts[0].amount_fen) == (gw.PAYOUT_STATE_PROCESSING, 800)

    done = await poll_state(gateway, pending.order_id, gw.PAYOUT_STATE_SUCCEEDED)
    assert done.state == gw.PAYOUT_STATE_SUCCEEDED
    again = await gateway.api.QueryPayouts(gw.QueryPayoutsRequest(order_ids=[pending.order_id]))
    assert list(again.payouts) == [done]
    empty = await gateway.api.QueryPayouts(gw.QueryPayoutsRequest())
    assert list(empty.payouts) == [] and list(empty.missing_order_ids) == []


@pytest.mark.parametrize("order_ids", [["o-1"] * 1001, ["o-1", ""], ["o-1", "x" * 129]])
async def test_query_payouts_refuses_bad_order_ids(gateway: Gateway, order_ids: list[str]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.api.QueryPayouts(gw.QueryPayoutsRequest(order_ids=order_ids))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("order_ids")


async def test_every_payout_change_is_in_the_feed(gateway: Gateway, faults: Any) -> None:
    await faults("gwa", async_rate=1.0, async_delay_ms=100)
    uid = new_uid()
    req = request(uid, "gwa", await bind(gateway, uid, "gwa"))
    await gateway.api.Payout(req)
    await poll_state(gateway, req.order_id, gw.PAYOUT_STATE_SUCCEEDED)
    async def feed_states() -> list[str]:
        states: list[str] = []
        cursor = ""
        while True:
            page = await gateway.feed.ReadChanges(feed_pb2.ReadChangesRequest(cursor=cursor, limit=5000))
            states += [c.payload_json for c in page.changes if c.kind == "payout" and c.key == req.order_id]
            if not page.changes:
                return states
            cursor = page.next_cursor

    states = await eventually(feed_states, lambda s: len(s) >= 2, timeout=5.0,
                              what="both changes in the feed")
    assert len(states) == 2
    assert '"state": "PROCESSING"' in states[0] and '"state": "SUCCEEDED"' in states[1]
    assert f'"amount_fen": {req.amount_fen}' in states[1]


async def test_a_recorded_payout_is_answered_from_its_record_whatever_changed(
    gateway: Gateway, faults: Any, db: asyncpg.Connection
) -> None:
    # A retry after a lost reply must learn "paid", never a refusal that reads as "not paid".
    await faults("gwa", capacity_per_second=1)
    uid = new_uid()
    method = await bind(gateway, uid, "gwa")
    req = request(uid, "gwa", method)
    first = await gateway.api.Payout(req)
    other = request(uid, "gwa", method)
    assert await status_of(gateway.api.Payout(other)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    at_capacity = await gateway.api.Payout(req)
    assert at_capacity.replayed and at_capacity.payout == first.payout

    await db.execute("DELETE FROM methods WHERE method_id = $1", method)
    unbound = await gateway.api.Payout(req)
    assert unbound.replayed and unbound.payout == first.payout
    assert await status_of(gateway.api.Payout(other)) == grpc.StatusCode.FAILED_PRECONDITION
    assert len(await rows_of(db, req.order_id)) == 1
