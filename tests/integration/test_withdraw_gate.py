"""The gate: closed window with its reopening time, release by uid cohort, live changes
through SetGate seen by every replica within seconds, and the audit of every change."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.admin.v1 import admin_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from tests.harness import new_uid, user_metadata
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

SH = ZoneInfo("Asia/Shanghai")
CAMPAIGN_NIGHT = datetime(2025, 1, 28, 20, 30, tzinfo=SH)
AFTER_REOPENING = datetime(2025, 1, 29, 1, 0, 5, tzinfo=SH)
ALL = FieldMask(paths=["*"])


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={"WITHDRAW_GATE_REFRESH_S": "2",
                                          "WITHDRAW_AUTO_RELEASE_INTERVAL_S": "0.2"})
    await m.start_withdraw()  # a second replica over the same database
    yield m
    await m.admin().SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(release_modulus=1, release_k=1), reason="reset", update_mask=ALL),
        timeout=10)
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
    admin = mesh.admin(caller="operator-alice")
    before = (await admin.GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config
    campaign = withdraw_pb2.GateConfig(timezone="Asia/Shanghai", closed_start="19:00", closed_end="01:00",
                                       release_modulus=10, release_k=3)
    applied = (await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=campaign, expected_version=before.version, reason="campaign night", update_mask=ALL),
        timeout=10)).config
    assert applied.version == before.version + 1
    # A direct change (this mesh's dev opt-out) is in the admin audit too, old -> new.
    audit = await admin.ListAdminAudit(withdraw_pb2.ListAdminAuditRequest(page_size=1), timeout=10)
    [entry] = audit.entries
    assert (entry.action, entry.actor, entry.reason) == ("gate.set", "operator-alice", "campaign night")
    assert entry.action_kind == admin_pb2.ADMIN_ACTION_GATE_SET
    assert json.loads(entry.old_json)["version"] == before.version
    assert json.loads(entry.new_json)["closed_start"] == "19:00"

    early, early_method = await user_in_cohort(mesh, residue=1)
    next_batch, next_method = await user_in_cohort(mesh, residue=4)
    late, late_method = await user_in_cohort(mesh, residue=8)

    # Both replicas pick the configuration up from the database.
    async def both_closed() -> bool:
        set_clock(mesh, CAMPAIGN_NIGHT)
        pages = [await mesh.withdraw(i).GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=early),
                                                        timeout=10, metadata=user_metadata(early))
                 for i in (0, 1)]
        return all(not p.gate.open for p in pages)

    await eventually(both_closed, timeout=5, what="both replicas to close the gate")

    # During the window: refused, with the reopening time and the prompt to bind a method.
    for index in (0, 1):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mesh.confirm(early, early_method, 500, index=index)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = err.value.details() or ""
        assert "01:00" in details and "Bind a payout method" in details
    page = await mesh.withdraw(1).GetWithdrawPage(withdraw_pb2.GetWithdrawPageRequest(uid=late), timeout=10,
                                                  metadata=user_metadata(late))
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
    # Only release_k named: the window and the modulus stay as they are.
    changed_at = time.monotonic()
    await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(release_k=6), expected_version=applied.version,
        reason="second batch", update_mask=FieldMask(paths=["release_k"])), timeout=10)

    async def admitted_on_replica_1() -> bool:
        page = await mesh.withdraw(1).GetWithdrawPage(
            withdraw_pb2.GetWithdrawPageRequest(uid=next_batch), timeout=10,
            metadata=user_metadata(next_batch))
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
        uid=next_batch, request_id=ok.order.request_id, amount_fen=500, method_id=next_method), timeout=10,
        metadata=user_metadata(next_batch))
    assert again.replayed and again.order.order_id == ok.order.order_id

    # Audit: who, old -> new, why; newest first.
    audit = (await mesh.admin(1).ListGateAudit(
        withdraw_pb2.ListGateAuditRequest(page_size=2), timeout=10)).entries
    assert [e.reason for e in audit] == ["second batch", "campaign night"]
    # Page by page, the same entries in the same order.
    newest = await mesh.admin(1).ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=1), timeout=10)
    older = await mesh.admin(1).ListGateAudit(
        withdraw_pb2.ListGateAuditRequest(page_size=1, page_token=newest.next_page_token), timeout=10)
    assert [e.reason for e in [*newest.entries, *older.entries]] == ["second batch", "campaign night"]
    assert {e.actor for e in audit} == {"operator-alice"}
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
            await admin.SetGate(withdraw_pb2.SetGateRequest(config=config, update_mask=ALL), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.SetGate(withdraw_pb2.SetGateRequest(
            config=withdraw_pb2.GateConfig(release_modulus=2, release_k=1),
            expected_version=current.version + 7, update_mask=ALL), timeout=10)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "expected_version" in (err.value.details() or "")
    after = (await admin.GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config
    assert after.version == current.version
    audit_after = len((await admin.ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=200),
                                                 timeout=10)).entries)
    assert audit_after == audit_before


async def gate_and_audit(
    admin: withdraw_pb2_grpc.WithdrawAdminServiceStub,
) -> tuple[withdraw_pb2.GateConfig, int]:
    config = (await admin.GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config
    audit = (await admin.ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=200), timeout=10)).entries
    return config, len(audit)


async def test_set_gate_changes_only_the_fields_its_mask_names(mesh: WdMesh) -> None:
    admin = mesh.admin(caller="operator-bob")
    base = withdraw_pb2.GateConfig(timezone="Europe/Paris", closed_start="20:00", closed_end="02:00",
                                   release_modulus=8, release_k=2, bind_prompt="Bind now.")
    start = (await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=base, reason="campaign", update_mask=ALL), timeout=10)).config
    # The request carries other values for the fields it does not name: they are ignored.
    patch = withdraw_pb2.GateConfig(release_k=5, closed_start="07:00", timezone="UTC", release_modulus=99)
    after = (await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=patch, expected_version=start.version, reason="more cohorts",
        update_mask=FieldMask(paths=["release_k"])), timeout=10)).config
    assert after.release_k == 5 and after.version == start.version + 1
    kept = (after.timezone, after.closed_start, after.closed_end, after.release_modulus, after.bind_prompt)
    assert kept == ("Europe/Paris", "20:00", "02:00", 8, "Bind now.")
    stored, _ = await gate_and_audit(admin)
    assert stored == after

    # Two fields at once; the merged result is what gets validated (k 5 > M 4 is refused).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.SetGate(withdraw_pb2.SetGateRequest(
            config=withdraw_pb2.GateConfig(release_modulus=4),
            update_mask=FieldMask(paths=["release_modulus"])), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "release_k" in (err.value.details() or "")
    window = (await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(closed_start="", closed_end=""), reason="no window",
        update_mask=FieldMask(paths=["closed_start", "closed_end"])), timeout=10)).config
    assert (window.closed_start, window.closed_end) == ("", "")
    assert (window.release_k, window.timezone) == (5, "Europe/Paris")

    # "*" replaces everything: a field left out takes its default.
    replaced = (await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(release_modulus=3, release_k=3), reason="open", update_mask=ALL),
        timeout=10)).config
    assert (replaced.release_modulus, replaced.release_k, replaced.timezone) == (3, 3, "Asia/Shanghai")
    assert replaced.bind_prompt != "Bind now."
    audit = (await admin.ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=3), timeout=10)).entries
    assert [e.reason for e in audit] == ["open", "no window", "more cohorts"]
    assert audit[2].old_config.release_k == 2 and audit[2].new_config.release_k == 5
    assert audit[2].new_config.closed_start == "20:00"


async def test_set_gate_refuses_an_empty_or_unknown_mask_and_changes_nothing(mesh: WdMesh) -> None:
    admin = mesh.admin()
    before, audit_before = await gate_and_audit(admin)
    wanted = withdraw_pb2.GateConfig(release_modulus=10, release_k=0)
    cases = [
        (None, "update_mask is required; use \"*\" to replace the whole configuration"),
        (FieldMask(paths=[]), "update_mask is required"),
        (FieldMask(paths=["release_k", "relase_modulus"]), "'relase_modulus'"),
        (FieldMask(paths=["version"]), "'version'"),
        (FieldMask(paths=["*", "release_k"]), '"*" must be the only path'),
    ]
    for mask, message in cases:
        request = withdraw_pb2.SetGateRequest(config=wanted, reason="typo")
        if mask is not None:
            request.update_mask.CopyFrom(mask)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.SetGate(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, mask
        assert message in (err.value.details() or ""), (mask, err.value.details())
    after, audit_after = await gate_and_audit(admin)
    assert after == before
    assert audit_after == audit_before


async def test_auto_release_holds_when_payout_svc_cannot_be_asked(
    mesh: WdMesh, caplog: pytest.LogCaptureFixture
) -> None:
    # This mesh has no payout_svc: PAYOUT_SVC_ADDR names a port nothing listens on.
    admin = mesh.admin()
    caplog.set_level(logging.INFO, logger="withdraw_svc.auto_release")
    start = (await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(release_modulus=10, release_k=2, auto_release=True,
                                       auto_release_drain_seconds=30),
        reason="auto", update_mask=ALL), timeout=10)).config
    _, audit_before = await gate_and_audit(admin)
    # One replica holds the auto-release lease and makes the passes (meshkit.leader).
    leading = await eventually(
        lambda: [mesh.app(i) for i in range(len(mesh.withdraws))
                 if mesh.app(i).leases["withdraw-auto-release"].held()] or None,
        what="a replica holding the auto-release lease")
    assert len(leading) == 1
    runner = leading[0].auto_release
    target = runner.ticks + 5
    await eventually(lambda: runner.ticks >= target, timeout=30,
                     what="5 auto-release passes on the leading replica")
    after, audit_after = await gate_and_audit(admin)
    assert (after.release_k, after.version) == (2, start.version)
    assert audit_after == audit_before
    warnings = [r for r in caplog.records if "payout_svc channel stats unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once by the one replica that asks, not once per pass
    await admin.SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(auto_release=False), reason="auto off",
        update_mask=FieldMask(paths=["auto_release"])), timeout=10)


async def test_the_database_refuses_bad_auto_release_options(mesh: WdMesh) -> None:
    stored = await mesh.pool.fetchval("SELECT config->>'auto_release' FROM gate_config WHERE id = 1")
    assert stored in ("true", "false")  # every stored config says it
    for bad in ('{"auto_release_step": 0}', '{"auto_release": "yes"}',
                '{"auto_release": true, "auto_release_drain_seconds": 0}'):
        with pytest.raises(asyncpg.CheckViolationError):
            await mesh.pool.execute("UPDATE gate_config SET config = config || $1::jsonb WHERE id = 1", bad)
