"""gateway_mock PayoutBatch: each item is judged as Payout would judge it (idempotent per
order id, conflict per item, capacity, transient errors and outcomes drawn per item); a lost
reply loses the whole answer after the commit. Own channels (gwc, gwd) so no other module's
gateway sees these faults."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest

from mesh.feed.v1 import feed_pb2
from mesh.gateway.v1 import gateway_pb2 as gw
from meshkit.db import connect_schema
from tests.harness import new_uid, start_service
from tests.integration.test_gateway_mock import ENV, Gateway, bind, request, rows_of, status_of
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def gateway(mesh_env: dict[str, str]) -> AsyncIterator[Gateway]:
    saved = os.environ.get("GATEWAY_MOCK_ADDR")
    running = await start_service("gateway_mock", {**ENV, "GATEWAY_CHANNELS": "bank,gwc,gwd"})
    # Other modules' services keep finding their own gateway.
    if saved is None:
        os.environ.pop("GATEWAY_MOCK_ADDR", None)
    else:
        os.environ["GATEWAY_MOCK_ADDR"] = saved
    gateway = Gateway(running)
    yield gateway
    await gateway.close()


@pytest.fixture(scope="module")
async def db(mesh_env: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect_schema(mesh_env["DATABASE_URL"], "gateway")
    yield conn
    await conn.close()


@pytest.fixture
async def faults(gateway: Gateway) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    touched: set[str] = set()

    async def apply(channel: str, **kwargs: Any) -> None:
        touched.add(channel)
        await gateway.admin.SetChannelFaults(
            gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(channel=channel, **kwargs)))

    yield apply
    for channel in touched:
        await gateway.admin.SetChannelFaults(
            gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(channel=channel)))


def kinds(reply: gw.PayoutBatchResponse) -> list[str]:
    return ["paid" if r.HasField("paid") else r.error.reason for r in reply.results]


async def test_batch_is_idempotent_per_order_and_conflicts_stay_per_item(
    gateway: Gateway, db: asyncpg.Connection
) -> None:
    uid = new_uid()
    method = await bind(gateway, uid, "gwc")
    a, b = request(uid, "gwc", method, 100), request(uid, "gwc", method, 200)
    single = await gateway.api.Payout(a)
    changed_b = request(uid, "gwc", method, 201, order_id=b.order_id)
    unbound = request(uid, "gwc", "m-not-bound", 300)
    bad = request(uid, "gwc", method, 0)
    reply = await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=[a, b, changed_b, unbound, bad, b]))
    assert kinds(reply) == ["paid", "paid", "PAYOUT_CONFLICT", "METHOD_NOT_BOUND", "BAD_AMOUNT", "paid"]
    assert reply.results[0].paid.replayed and reply.results[0].paid.payout == single.payout
    assert not reply.results[1].paid.replayed and reply.results[1].paid.payout.amount_fen == 200
    assert reply.results[5].paid.replayed and reply.results[5].paid.payout == reply.results[1].paid.payout
    assert [r.error.code for r in reply.results[2:5]] == ["ALREADY_EXISTS", "FAILED_PRECONDITION",
                                                          "INVALID_ARGUMENT"]
    again = await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=[b, changed_b]))
    assert kinds(again) == ["paid", "PAYOUT_CONFLICT"]
    assert again.results[0].paid.replayed and again.results[0].paid.payout == reply.results[1].paid.payout
    for req, n in ((a, 1), (b, 1), (unbound, 0), (bad, 0)):
        assert len(await rows_of(db, req.order_id)) == n
    assert (await rows_of(db, b.order_id))[0]["amount_fen"] == 200
    # Its record reached the change feed with it. The feed shows a change only once every
    # transaction older than it has ended, anywhere on the server: on a shared PostgreSQL
    # that can take a moment, so the feed is read until the record is there.
    cursor, payloads = "", []

    async def read_on() -> list[str]:
        nonlocal cursor
        while True:
            page = await gateway.feed.ReadChanges(feed_pb2.ReadChangesRequest(cursor=cursor, limit=5000))
            payloads.extend(c.payload_json for c in page.changes
                            if c.kind == "payout" and c.key == b.order_id)
            if not page.changes:
                return payloads
            cursor = page.next_cursor

    await eventually(read_on, what=f"the payout of {b.order_id} in the gateway's change feed")
    assert len(payloads) == 1 and '"amount_fen": 200' in payloads[0] and '"state": "SUCCEEDED"' in payloads[0]


async def test_capacity_is_counted_per_item_and_recorded_orders_take_none(
    gateway: Gateway, faults: Any, db: asyncpg.Connection
) -> None:
    uid = new_uid()
    method = await bind(gateway, uid, "gwc")
    known = request(uid, "gwc", method)
    await gateway.api.Payout(known)
    await faults("gwc", capacity_per_second=2)
    news = [request(uid, "gwc", method) for _ in range(4)]
    reply = await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=[known, *news]))
    # The recorded order is answered from its record, never refused. It held a slot while
    # the batch was judged (no read before the insert), and gave it back afterwards.
    assert kinds(reply) == ["paid", "paid", "CHANNEL_CAPACITY", "CHANNEL_CAPACITY", "CHANNEL_CAPACITY"]
    assert reply.results[0].paid.replayed
    assert reply.results[2].error.code == "RESOURCE_EXHAUSTED"
    for req, result in zip(news, reply.results[1:], strict=True):
        assert len(await rows_of(db, req.order_id)) == (1 if result.HasField("paid") else 0)
    later = await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=news[1:]))
    assert kinds(later) == ["paid", "CHANNEL_CAPACITY", "CHANNEL_CAPACITY"]


async def test_faults_are_drawn_per_item(gateway: Gateway, faults: Any, db: asyncpg.Connection) -> None:
    uid = new_uid()
    method_c, method_d = await bind(gateway, uid, "gwc"), await bind(gateway, uid, "gwd")
    await faults("gwc", transient_error_rate=1.0)
    await faults("gwd", definitive_failure_rate=1.0)
    known = request(uid, "gwc", method_c)
    await faults("gwc")
    await gateway.api.Payout(known)
    await faults("gwc", transient_error_rate=1.0)
    flaky, failing = request(uid, "gwc", method_c), request(uid, "gwd", method_d)
    reply = await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=[flaky, failing, known]))
    assert kinds(reply) == ["CHANNEL_UNAVAILABLE", "paid", "paid"]
    assert reply.results[0].error.code == "UNAVAILABLE"
    assert reply.results[1].paid.payout.state == gw.PAYOUT_STATE_FAILED
    assert reply.results[1].paid.payout.failure_reason == "account closed"
    assert reply.results[2].paid.replayed  # a recorded order never sees a transient error
    assert await rows_of(db, flaky.order_id) == []

    await faults("gwd", async_rate=1.0, async_delay_ms=60_000)
    parked = request(uid, "gwd", method_d)
    reply = await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=[parked]))
    assert reply.results[0].paid.payout.state == gw.PAYOUT_STATE_PROCESSING
    row = (await rows_of(db, parked.order_id))[0]
    assert row["complete_at"] is not None and row["async_outcome"] == "SUCCEEDED"


async def test_a_lost_reply_loses_the_whole_batch_after_the_commit(
    gateway: Gateway, faults: Any, db: asyncpg.Connection
) -> None:
    uid = new_uid()
    method = await bind(gateway, uid, "gwc")
    await faults("gwc", lost_reply_rate=1.0)
    reqs = [request(uid, "gwc", method) for _ in range(3)]
    assert await status_of(gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=reqs))) \
        == grpc.StatusCode.UNAVAILABLE
    for req in reqs:
        assert len(await rows_of(db, req.order_id)) == 1
    await faults("gwc")
    replay = await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=reqs))
    assert [r.paid.replayed for r in replay.results] == [True, True, True]


async def test_an_oversized_batch_is_refused_whole(gateway: Gateway, db: asyncpg.Connection) -> None:
    uid = new_uid()
    method = await bind(gateway, uid, "gwc")
    reqs = [request(uid, "gwc", method) for _ in range(501)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.api.PayoutBatch(gw.PayoutBatchRequest(payouts=reqs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 500" in (err.value.details() or "")
    assert await db.fetchval("SELECT count(*) FROM payouts WHERE uid = $1", uid) == 0
