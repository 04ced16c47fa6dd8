"""The gate: closed window with its reopening time, release by uid cohort, live changes
through SetGate seen by every replica within seconds, and the audit of every change."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest

from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2
from tests.harness import new_uid
from tests.integration.test_withdraw_support import WdMesh, eventually, start_mesh

SH = ZoneInfo("Asia/Shanghai")
CAMPAIGN_NIGHT = datetime(2025, 1, 28, 20, 30, tzinfo=SH)
AFTER_REOPENING = datetime(2025, 1, 29, 1, 0, 5, tzinfo=SH)


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={"WITHDRAW_GATE_REFRESH_S": "2"})
    await m.start_withdraw()  # a second replica over the same database
    yield m
    await m.admin().SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(release_modulus=1, release_k=1), reason="reset"), timeout=10)
    await m.stop()


def set_clock(mesh: WdMesh, at: datetime) -> None:
    for index in range(len(mesh.withdraws)):
        mesh.app(index).gate.clock = lambda: at


async def user_in_cohort(mesh: WdMesh, residue: int, modulus: int = 10) -> tuple[int, str]:
    while True:
        uid = new_uid()
        if uid % modulus == residue:
            break
    method_id = f"m-gate-{uid}"
    await mesh.gateway().BindMethod(gateway_pb2.BindMethodRequest(
        uid=uid, channel="alipay", account=f"alice{uid}@example.com", method_id=method_id), timeout=10)
    await mesh.fund(uid, 10_000)
    return uid, method_id


async def test_the_default_gate_is_open(mesh: WdMesh) -> None:
    reply = await mesh.admin().GetGate(withdraw_pb2.GetGateRequest(uid=12345), timeout=10)
    assert reply.gate.open
    assert reply.config.closed_start == "" and reply.config.release_k == reply.config.release_modulus


async def test_closed_window_then_cohorts_then_raising_k(mesh: WdMesh) -> None:
    admin = mesh.admin(caller="ops-alice")
    before = (await admin.GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config
    campaign = withdraw_pb2.GateConfig(timezone="Asia/Shanghai", closed_start="19:00", closed_end="01:00",
                                       release_modulus=10, release_k=3)
    applied = (await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=campaign, expected_version=before.version, reason="campaign night"), timeout=10)).config
    assert applied.version == before.version + 1

    early, early_method = await user_in_cohort(mesh, residue=1)
    next_batch, next_method = await user_in_cohort(mesh, residue=4)
    late, late_method = await user_in_cohort(mesh, residue=8)

    # Both replicas pick the configuration up from the database.
    async def both_closed() -> bool:
        set_clock(mesh, CAMPAIGN_NIGHT)
        pages = [await mesh.withdraw(i).GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=early),
                                                        timeout=10) for i in (0, 1)]
        return all(not p.gate.open for p in pages)

    await eventually(both_closed, timeout=5, what="both replicas to close the gate")

    # During the window: refused, with the reopening time and the prompt to bind a method.
    for index in (0, 1):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(early, early_method, 500, index=index)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = err.value.details() or ""
        assert "01:00" in details and "Bind a payout method" in details
    page = await mesh.withdraw(1).GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=late), timeout=10)
    assert not page.gate.open
    assert page.gate.open_time.ToDatetime().isoformat() == "2025-01-28T17:00:00"  # 01:00 +08:00
    assert await mesh.order_rows(early) == []

    # After reopening only uid mod 10 < 3 passes.
    set_clock(mesh, AFTER_REOPENING)
    ok = await mesh.confirm(early, early_method, 500, index=1)
    assert ok.order.state == withdraw_pb2.ORDER_STATE_PENDING_PAYOUT
    for uid, method in ((next_batch, next_method), (late, late_method)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(uid, method, 500, index=1)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "batch" in (err.value.details() or "")

    # Raising k on replica 0 admits the next cohort on replica 1 within 5 s, no restart.
    raised = withdraw_pb2.GateConfig(timezone="Asia/Shanghai", closed_start="19:00", closed_end="01:00",
                                     release_modulus=10, release_k=6)
    changed_at = time.monotonic()
    await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=raised, expected_version=applied.version, reason="second batch"), timeout=10)

    async def admitted_on_replica_1() -> bool:
        page = await mesh.withdraw(1).GetWithdrawPage(
            withdraw_pb2.GetWithdrawPageRequest(uid=next_batch), timeout=10)
        return page.gate.open

    await eventually(admitted_on_replica_1, timeout=5.0, interval=0.1, what="replica 1 to see k=6")
    assert time.monotonic() - changed_at <= 5.0
    ok = await mesh.confirm(next_batch, next_method, 500, index=1)
    assert ok.order.state == withdraw_pb2.ORDER_STATE_PENDING_PAYOUT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.confirm(late, late_method, 500, index=1)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # A repeat of an order created while open is answered even if the gate has closed since.
    set_clock(mesh, CAMPAIGN_NIGHT)
    again = await mesh.withdraw(0).ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
        uid=next_batch, request_id=ok.order.request_id, amount_fen=500, method_id=next_method), timeout=10)
    assert again.replayed and again.order.order_id == ok.order.order_id

    # Audit: who, old -> new, why; newest first.
    audit = (await mesh.admin(1).ListGateAudit(
        withdraw_pb2.ListGateAuditRequest(page_size=2), timeout=10)).entries
    assert [e.reason for e in audit] == ["second batch", "campaign night"]
    assert {e.actor for e in audit} == {"ops-alice"}
    assert audit[0].old_config.release_k == 3 and audit[0].new_config.release_k == 6
    assert audit[1].old_config.closed_start == before.closed_start
    assert audit[1].new_config.closed_start == "19:00"
    assert audit[0].change_time.seconds > 0


async def test_set_gate_refuses_bad_configs_and_stale_versions(mesh: WdMesh) -> None:
    admin = mesh.admin()
    current = (await admin.GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config
    audit_before = len((await admin.ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=200),
                                                  timeout=10)).entries)
    bad = [
        (withdraw_pb2.GateConfig(timezone="Mars/Base", release_modulus=1, release_k=1), "timezone"),
        (withdraw_pb2.GateConfig(closed_start="7pm", closed_end="01:00", release_modulus=1, release_k=1),
         "closed_start"),
        (withdraw_pb2.GateConfig(release_modulus=0, release_k=0), "release_modulus"),
        (withdraw_pb2.GateConfig(release_modulus=4, release_k=5), "release_k"),
    ]
    for config, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.SetGate(withdraw_pb2.SetGateRequest(config=config), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.SetGate(withdraw_pb2.SetGateRequest(
            config=withdraw_pb2.GateConfig(release_modulus=2, release_k=1),
            expected_version=current.version + 7), timeout=10)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "expected_version" in (err.value.details() or "")
    after = (await admin.GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config
    assert after.version == current.version
    audit_after = len((await admin.ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=200),
                                                 timeout=10)).entries)
    assert audit_after == audit_before
