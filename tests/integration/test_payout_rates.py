"""Channel rates in the mesh (gateway_mock, account_svc, withdraw_svc, payout_svc in-process,
real PostgreSQL and Redis): a channel with rate 0, or with no rate at all, is paused and
pays nothing; no limit is only ever what an operator asked for explicitly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from mesh.gateway.v1 import gateway_pb2 as gw
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

# pzero is configured with rate 0, pnorate and popen with nothing; pctl has a plain rate.
CHANNELS = "pzero,pnorate,popen,pctl"


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, payout=True, extra={
        "GATEWAY_CHANNELS": CHANNELS, "WITHDRAW_CHANNELS": CHANNELS, "PAYOUT_CHANNELS": CHANNELS,
        "PAYOUT_DEFAULT_RATES": "pzero:0,pctl:1000", "PAYOUT_RATE_REFRESH_S": "0.3",
        "PAYOUT_WORKERS_PER_CHANNEL": "2", "WITHDRAW_RELAY_INTERVAL_MS": "100",
    })
    yield m
    await m.stop()


def admin(mesh: WdMesh) -> payout_pb2_grpc.PayoutAdminServiceStub:
    assert mesh.payout_srv is not None
    return payout_pb2_grpc.PayoutAdminServiceStub(mesh._channel(mesh.payout_srv.address))


async def order_on(mesh: WdMesh, channel: str) -> str:
    uid, method = await mesh.user(balance_fen=500, channel=channel)
    return (await mesh.confirm(uid, method, 500)).order.order_id


async def gateway_has(mesh: WdMesh, order_id: str) -> bool:
    try:
        await mesh.gateway().QueryPayout(gw.QueryPayoutRequest(order_id=order_id), timeout=10)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


async def settled(mesh: WdMesh, order_id: str) -> str:
    async def probe() -> str | None:
        state = await mesh.order_state(order_id)
        return state if state in ("SUCCEEDED", "FAILED") else None

    return await eventually(probe, timeout=10, what=f"order {order_id} to settle")


async def test_a_channel_with_rate_0_or_no_rate_is_paused_and_pays_nothing(mesh: WdMesh) -> None:
    stub = admin(mesh)
    zero, norate, control = [await order_on(mesh, ch) for ch in ("pzero", "pnorate", "pctl")]
    assert await settled(mesh, control) == "SUCCEEDED"  # the relay and the workers are at work

    async def queued() -> bool:
        stats = await stub.GetChannelStats(payout_pb2.GetChannelStatsRequest(), timeout=10)
        return all(s.backlog == 1 for s in stats.channels if s.channel in ("pzero", "pnorate"))

    await eventually(queued, timeout=5, what="both jobs on their streams")

    async def touched() -> bool:
        states = {await mesh.order_state(o) for o in (zero, norate)}
        paid = [await gateway_has(mesh, o) for o in (zero, norate)]
        return states != {"PENDING_PAYOUT"} or any(paid)

    with pytest.raises(AssertionError, match="timed out"):
        await eventually(touched, timeout=1.5, what="a paused channel to call the gateway")
    for channel in ("pzero", "pnorate"):
        request = payout_pb2.GetChannelStatsRequest(channel=channel)
        [s] = (await stub.GetChannelStats(request, timeout=10)).channels
        # Nothing taken from the stream either: no attempt spent, nothing held.
        assert (s.paused, s.unlimited, s.rate_limit_per_second) == (True, False, 0.0), s
        assert (s.backlog, s.pending, s.dead_letters) == (1, 0, 0), s

    # Opened: what waited is paid, once, on its first attempt.
    await stub.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="pzero", rate_per_second=100),
                              timeout=10)
    assert await settled(mesh, zero) == "SUCCEEDED"
    assert await mesh.entries(zero) == ["DEBIT"]
    assert await mesh.order_state(norate) == "PENDING_PAYOUT"


async def test_unlimited_only_when_said_explicitly(mesh: WdMesh) -> None:
    stub = admin(mesh)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="popen", rate_per_second=0),
                                  timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unlimited" in (err.value.details() or "")
    [before] = (await stub.GetChannelStats(payout_pb2.GetChannelStatsRequest(channel="popen"),
                                           timeout=10)).channels
    assert before.paused and not before.unlimited

    reply = await stub.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="popen", unlimited=True),
                                      timeout=10)
    stats = reply.stats
    assert (stats.unlimited, stats.paused, stats.rate_limit_per_second) == (True, False, 0.0)
    # A direct change (this mesh's dev opt-out) is in the admin audit, old -> new.
    [entry] = (await stub.ListAdminAudit(payout_pb2.ListAdminAuditRequest(page_size=1), timeout=10)).entries
    assert (entry.action, entry.target, entry.actor) == ("rate.set", "popen", "operator-alice")
    assert json.loads(entry.new_json) == {"rate_per_second": 0.0, "unlimited": True}
    orders = [await order_on(mesh, "popen") for _ in range(3)]
    assert {await settled(mesh, o) for o in orders} == {"SUCCEEDED"}
    assert all([await gateway_has(mesh, o) for o in orders])
