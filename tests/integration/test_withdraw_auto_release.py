"""The gate's automatic release with the real services: release_k climbs by itself while
every channel's backlog would drain in time at its rate (payout_svc's channel stats), holds
while one would not, and every step is an audited compare-and-set like a manual SetGate."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2
from tests.harness import unlimited_rates
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

ALL = FieldMask(paths=["*"])
INTERVAL_S = 0.2


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    # alipay has no rate at all: paused. Its workers take nothing from its stream, so an
    # order paid through it stays in the backlog until the channel gets a rate.
    m = await start_mesh(mesh_env, payout=True, extra={
        "WITHDRAW_AUTO_RELEASE_INTERVAL_S": str(INTERVAL_S),
        "PAYOUT_CHANNELS": "bank,alipay,balance",
        "PAYOUT_DEFAULT_RATES": unlimited_rates("bank,balance"),
    })
    await m.start_withdraw()  # two replicas: the lease holder decides (and its CAS would hold anyway)
    yield m
    await m.stop()


def payout_admin(mesh: WdMesh) -> payout_pb2_grpc.PayoutAdminServiceStub:
    assert mesh.payout_srv is not None
    return payout_pb2_grpc.PayoutAdminServiceStub(mesh._channel(mesh.payout_srv.address))


async def set_gate(mesh: WdMesh, config: withdraw_pb2.GateConfig, reason: str) -> withdraw_pb2.GateConfig:
    reply = await mesh.admin(caller="operator-alice").SetGate(
        withdraw_pb2.SetGateRequest(config=config, reason=reason, update_mask=ALL), timeout=10)
    return reply.config


async def gate(mesh: WdMesh) -> withdraw_pb2.GateConfig:
    return (await mesh.admin().GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config


async def audit_since(mesh: WdMesh, version: int) -> list[withdraw_pb2.GateAuditEntry]:
    entries = (await mesh.admin().ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=200),
                                                timeout=10)).entries
    return [e for e in reversed(entries) if e.new_config.version > version]


async def passes_by_the_leader(mesh: WdMesh, count: int) -> None:
    """Wait (bounded) until the replica holding the auto-release lease has made `count` more
    passes; the other replica makes none meanwhile (meshkit.leader)."""
    def leaders() -> list[int]:
        return [i for i in range(len(mesh.withdraws))
                if mesh.app(i).leases["withdraw-auto-release"].held()]

    (leader,) = await eventually(lambda: leaders() if len(leaders()) == 1 else None,
                                 what="one replica holding the auto-release lease")
    others = {i: mesh.app(i).auto_release.ticks for i in range(len(mesh.withdraws)) if i != leader}
    target = mesh.app(leader).auto_release.ticks + count
    await eventually(lambda: mesh.app(leader).auto_release.ticks >= target, timeout=30,
                     what=f"{count} auto-release passes on the leading replica")
    assert {i: mesh.app(i).auto_release.ticks for i in others} == others


AUTO = withdraw_pb2.GateConfig(release_modulus=10, release_k=1, auto_release=True,
                               auto_release_drain_seconds=60)


async def test_k_climbs_to_m_one_audited_step_at_a_time(mesh: WdMesh) -> None:
    start = await set_gate(mesh, AUTO, "campaign night, auto release")
    assert start.auto_release and start.auto_release_drain_seconds == 60 and start.auto_release_step == 1

    async def at_m() -> bool:
        return (await gate(mesh)).release_k == 10

    await eventually(at_m, timeout=30, interval=0.1, what="release_k to reach 10")
    await passes_by_the_leader(mesh, 3)
    final = await gate(mesh)
    assert final.release_k == 10 and final.version == start.version + 9  # stopped at M

    steps = await audit_since(mesh, start.version)
    assert len(steps) == 9
    assert {e.actor for e in steps} == {"auto-release"}
    # Each version stepped once, by one replica: k goes 1 -> 2 -> ... -> 10, no step lost
    # or doubled, and every entry says which numbers allowed it.
    moves = [(e.old_config.release_k, e.new_config.release_k) for e in steps]
    assert moves == [(k, k + 1) for k in range(1, 10)]
    assert [e.new_config.version for e in steps] == list(range(start.version + 1, start.version + 10))
    for entry in steps:
        k = entry.old_config.release_k
        assert f"k {k} -> {k + 1} of 10" in entry.reason
        assert "every channel drains within 60s" in entry.reason
        assert "alipay paused (backlog 0)" in entry.reason and "bank unlimited" in entry.reason
        assert entry.new_config.auto_release and entry.new_config.closed_start == ""
    # The admin audit has the same nine steps, each with its old and new k.
    admin_steps = [e for e in (await mesh.admin().ListAdminAudit(
        withdraw_pb2.ListAdminAuditRequest(page_size=200), timeout=10)).entries
        if e.actor == "auto-release" and json.loads(e.new_json)["version"] > start.version]
    assert [(json.loads(e.old_json)["release_k"], json.loads(e.new_json)["release_k"])
            for e in reversed(admin_steps)] == moves
    assert {e.action for e in admin_steps} == {"gate.set"}


async def test_k_holds_while_a_paused_channel_has_a_backlog_then_climbs_when_it_drains(mesh: WdMesh) -> None:
    # Open for everybody, then queue orders on the paused channel.
    await set_gate(mesh, withdraw_pb2.GateConfig(release_modulus=1, release_k=1), "open for the backlog")
    uids = []
    for _ in range(3):
        uid, method_id = await mesh.user(10_000, channel="alipay")
        await mesh.confirm(uid, method_id, 500)
        uids.append(uid)

    async def all_in_alipay_backlog() -> bool:
        stats = await payout_admin(mesh).GetChannelStats(
            payout_pb2.GetChannelStatsRequest(channel="alipay"), timeout=10)
        channel = stats.channels[0]
        return channel.paused and channel.backlog + channel.pending == 3

    await eventually(all_in_alipay_backlog, timeout=20, what="the 3 orders in alipay's backlog")

    start = await set_gate(mesh, AUTO, "auto release with alipay paused")
    await passes_by_the_leader(mesh, 5)
    held = await gate(mesh)
    assert (held.release_k, held.version) == (1, start.version)
    assert await audit_since(mesh, start.version) == []
    last = mesh.app(0).auto_release.last
    assert last is not None and not last.advance
    assert "alipay would not drain within 60s" in last.reason and "alipay paused (backlog 3)" in last.reason

    # The channel gets a rate: its backlog drains and the release goes on by itself.
    await payout_admin(mesh).SetChannelRate(
        payout_pb2.SetChannelRateRequest(channel="alipay", unlimited=True), timeout=10)

    async def at_m() -> bool:
        return (await gate(mesh)).release_k == 10

    await eventually(at_m, timeout=60, interval=0.1, what="release_k to reach 10 once alipay drains")
    steps = await audit_since(mesh, start.version)
    assert len(steps) == 9 and {e.actor for e in steps} == {"auto-release"}
    assert "alipay unlimited" in steps[0].reason
    rows = [await mesh.order_rows(uid) for uid in uids]
    assert all(len(r) == 1 for r in rows)


async def test_k_holds_while_the_window_is_closed(mesh: WdMesh) -> None:
    # Nobody withdraws while closed, so every backlog is empty: that must not count as room.
    shanghai = ZoneInfo("Asia/Shanghai")
    night = datetime(2025, 1, 28, 20, 30, tzinfo=shanghai)
    day = datetime(2025, 1, 29, 12, 0, tzinfo=shanghai)
    clocks = [mesh.app(i).gate.clock for i in range(len(mesh.withdraws))]
    try:
        for i in range(len(mesh.withdraws)):
            mesh.app(i).gate.clock = lambda: night
        closed = withdraw_pb2.GateConfig()
        closed.CopyFrom(AUTO)
        closed.timezone, closed.closed_start, closed.closed_end = "Asia/Shanghai", "19:00", "01:00"
        start = await set_gate(mesh, closed, "campaign night, auto release from the reopening")
        await passes_by_the_leader(mesh, 5)
        held = await gate(mesh)
        assert (held.release_k, held.version) == (1, start.version)
        last = mesh.app(0).auto_release.last
        assert last is not None and "closed until 2025-01-29T01:00+08:00" in last.reason

        for i in range(len(mesh.withdraws)):
            mesh.app(i).gate.clock = lambda: day

        async def at_m() -> bool:
            return (await gate(mesh)).release_k == 10

        await eventually(at_m, timeout=30, interval=0.1, what="release_k to reach 10 once open")
        assert len(await audit_since(mesh, start.version)) == 9
    finally:
        for i, clock in enumerate(clocks):
            mesh.app(i).gate.clock = clock
