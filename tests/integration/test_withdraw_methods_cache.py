"""The withdraw page's bound-methods cache across two withdraw_svc replicas sharing Redis:
a view served from the copy asks the gateway nothing, a bind at the gateway bumps the
user's methods version so the next view on either replica shows the new method, confirm
accepts a method bound a moment ago on the replica that cached the old list, and with the
gateway down the page renders the cached list marked stale."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2
from tests.harness import user_metadata
from tests.integration.withdraw_support import WdMesh, _start, start_mesh
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env)
    await m.start_withdraw()
    yield m
    await m.stop()


async def page(mesh: WdMesh, uid: int, index: int) -> withdraw_pb2.GetWithdrawPageResponse:
    return await mesh.withdraw(index).GetWithdrawPage(
        withdraw_pb2.GetWithdrawPageRequest(uid=uid), timeout=10, metadata=user_metadata(uid))


async def bind(mesh: WdMesh, uid: int, method_id: str, channel: str = "alipay") -> None:
    await mesh.gateway().BindMethod(gateway_pb2.BindMethodRequest(
        uid=uid, channel=channel, account=f"6222{uid % 10**12:012d}", method_id=method_id), timeout=10)


async def test_a_bind_shows_on_the_next_view_of_either_replica(mesh: WdMesh) -> None:
    uid, first = await mesh.user(balance_fen=1_000)
    version_key = mesh.keys.methods_version(uid)
    bumped = int(await mesh.redis.get(version_key) or 0)
    assert bumped >= 1  # the bind of mesh.user bumped it
    for index in (0, 1):
        assert [m.method_id for m in (await page(mesh, uid, index)).methods] == [first]

    await bind(mesh, uid, f"{first}-2")
    assert int(await mesh.redis.get(version_key) or 0) == bumped + 1
    for index in (1, 0):
        shown = await page(mesh, uid, index)
        assert [m.method_id for m in shown.methods] == [first, f"{first}-2"] and not shown.methods_stale


async def test_a_replayed_bind_bumps_the_version_again(mesh: WdMesh) -> None:
    uid, first = await mesh.user()
    version_key = mesh.keys.methods_version(uid)
    before = int(await mesh.redis.get(version_key) or 0)
    await bind(mesh, uid, first, channel="bank")  # the same binding: a no-op at the gateway
    assert int(await mesh.redis.get(version_key) or 0) == before + 1


async def test_confirm_accepts_a_method_bound_after_this_replica_cached_the_list(mesh: WdMesh) -> None:
    uid, first = await mesh.user(balance_fen=5_000)
    await page(mesh, uid, 0)
    await mesh.confirm(uid, first, 200, index=0)  # the copy of [first] is now in memory too
    # Bound, and the bump wiped, as if the gateway had crashed between commit and INCR.
    await bind(mesh, uid, f"{first}-new")
    await mesh.redis.delete(mesh.keys.methods_version(uid))
    reply = await mesh.confirm(uid, f"{first}-new", 300, index=0)
    assert reply.order.method_id == f"{first}-new" and reply.order.channel == "alipay"


async def test_get_order_carries_its_history_in_order(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000)
    reply = await mesh.confirm(uid, method, 300)
    order = await mesh.order(uid, reply.order.order_id)
    states = [(h.from_state, h.to_state) for h in order.history]
    assert states == [
        (withdraw_pb2.ORDER_STATE_UNSPECIFIED, withdraw_pb2.ORDER_STATE_PENDING_DEDUCT),
        (withdraw_pb2.ORDER_STATE_PENDING_DEDUCT, withdraw_pb2.ORDER_STATE_PENDING_PAYOUT),
    ]
    assert all(h.change_time.seconds > 0 for h in order.history)


async def test_gateway_down_the_page_renders_the_cached_list_marked_stale(mesh: WdMesh) -> None:
    uid, first = await mesh.user(balance_fen=1_000)
    assert [m.method_id for m in (await page(mesh, uid, 0)).methods] == [first]
    await bind(mesh, uid, f"{first}-late")  # the copy is outdated now
    current, current_method = await mesh.user()
    await page(mesh, current, 0)
    never_viewed, _ = await mesh.user()
    port = mesh.gateway_srv.port
    await mesh.gateway_srv.stop(0.5)
    try:
        for index in (0, 1):
            shown = await page(mesh, uid, index)
            assert shown.methods_stale and [m.method_id for m in shown.methods] == [first]
            assert shown.balance_fen == 1_000 and not shown.balance_stale
        # A current copy is served without asking the gateway: nothing is stale.
        fresh = await page(mesh, current, 1)
        assert not fresh.methods_stale and [m.method_id for m in fresh.methods] == [current_method]
        empty = await page(mesh, never_viewed, 0)
        assert empty.methods_stale and list(empty.methods) == []
    finally:
        mesh.gateway_srv = await _start("gateway_mock", mesh.env, port=port)
    # Once the replica's channel to the gateway reconnects, the outdated copy is replaced.
    shown = await eventually(lambda: page(mesh, uid, 1), lambda p: not p.methods_stale, timeout=30,
                             interval=0.2, what="the gateway to answer the page again")
    assert [m.method_id for m in shown.methods] == [first, f"{first}-late"]
