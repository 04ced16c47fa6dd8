"""Four-eyes admin changes on a mesh that enforces them (the production default): a gate or
rate change proposed by one operator is applied only when a different one approves it, and
every admin action is in the service's admin audit with who, when, old and new."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.admin.v1 import admin_pb2
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.db import connect_schema
from meshkit.server import RunningServer
from tests.integration.withdraw_support import WdMesh, _start, start_mesh
from tests.waiting import eventually
from tools.loadlib import four_eyes

ALICE = "operator-alice"
BOB = "operator-bob"
RK = FieldMask(paths=["release_k"])


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, payout=True, extra={
        "ADMIN_FOUR_EYES": "true",
        "PAYOUT_DEFAULT_RATES": "bank:50,alipay:50,balance:50",
    })
    # A second replica whose proposals expire after a second (the expiry test proposes there).
    await m.start_withdraw({"ADMIN_FOUR_EYES": "true", "ADMIN_CHANGE_TTL_S": "1"})
    yield m
    await m.stop()


def admin(mesh: WdMesh, caller: str, index: int = 0) -> withdraw_pb2_grpc.WithdrawAdminServiceStub:
    return mesh.admin(index, caller=caller)


def payout_admin(mesh: WdMesh, caller: str | None) -> payout_pb2_grpc.PayoutAdminServiceStub:
    """As `caller`; None: each method as the policy lists it (propose as an operator,
    approve as an approver), as the tools call."""
    assert mesh.payout_srv is not None
    return payout_pb2_grpc.PayoutAdminServiceStub(mesh._channel(mesh.payout_srv.address, caller=caller))


async def gate(mesh: WdMesh) -> withdraw_pb2.GateConfig:
    return (await admin(mesh, BOB).GetGate(withdraw_pb2.GetGateRequest(), timeout=10)).config


async def propose_k(mesh: WdMesh, caller: str, k: int, expected_version: int = 0,
                    index: int = 0) -> withdraw_pb2.GateChange:
    reply = await admin(mesh, caller, index).ProposeGateChange(withdraw_pb2.ProposeGateChangeRequest(
        request=withdraw_pb2.SetGateRequest(
            config=withdraw_pb2.GateConfig(release_k=k), update_mask=RK, expected_version=expected_version,
            reason=f"release k={k}")), timeout=10)
    return reply.change


async def changes(mesh: WdMesh) -> list[withdraw_pb2.GateChange]:
    reply = await admin(mesh, BOB).ListGateChanges(withdraw_pb2.ListGateChangesRequest(page_size=200),
                                                   timeout=10)
    return list(reply.changes)


async def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def audit(stub: Any, page_size: int = 20) -> list[admin_pb2.AdminAuditEntry]:
    return list((await stub.ListAdminAudit(_audit_request(stub, page_size), timeout=10)).entries)


def _audit_request(stub: Any, page_size: int) -> Any:
    module = {
        withdraw_pb2_grpc.WithdrawAdminServiceStub: withdraw_pb2,
        payout_pb2_grpc.PayoutAdminServiceStub: payout_pb2,
        gateway_pb2_grpc.GatewayAdminServiceStub: gateway_pb2,
        recon_pb2_grpc.ReconServiceStub: recon_pb2,
    }[type(stub)]
    return module.ListAdminAuditRequest(page_size=page_size)


async def test_a_gate_change_needs_a_second_operator(mesh: WdMesh) -> None:
    before = await gate(mesh)
    target = 0 if before.release_k else 1

    # The direct call is refused and changes nothing.
    code, details = await code_of(admin(mesh, ALICE).SetGate(withdraw_pb2.SetGateRequest(
        config=withdraw_pb2.GateConfig(release_k=target), update_mask=RK, reason="direct"), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "four-eyes: propose and approve" in details

    # Proposer alone: stored, not applied.
    change = await propose_k(mesh, ALICE, target, expected_version=before.version)
    assert change.review.state == admin_pb2.CHANGE_STATE_PROPOSED
    assert change.review.proposer == ALICE
    assert change.request.update_mask.paths == ["release_k"]
    assert change.request.expected_version == before.version
    assert await gate(mesh) == before

    # The proposer approving their own change is refused; still nothing applied.
    code, details = await code_of(admin(mesh, ALICE).ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=change.review.change_id), timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot approve" in details
    assert await gate(mesh) == before

    # A second operator: applied, through SetGate's compare-and-set (version + 1).
    approved = await admin(mesh, BOB).ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=change.review.change_id), timeout=10)
    assert approved.change.review.state == admin_pb2.CHANGE_STATE_APPLIED
    assert approved.change.review.decided_by == BOB
    assert approved.config.release_k == target and approved.config.version == before.version + 1
    after = await gate(mesh)
    assert after.release_k == target and after.version == before.version + 1
    assert after.closed_start == before.closed_start and after.timezone == before.timezone

    # Audited with both identities: the gate's own audit and the admin audit.
    gate_audit = (await admin(mesh, BOB).ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=1),
                                                       timeout=10)).entries[0]
    assert gate_audit.actor == BOB and f"proposed by {ALICE}" in gate_audit.reason
    assert gate_audit.old_config.release_k == before.release_k and gate_audit.new_config.release_k == target
    entries = await audit(admin(mesh, BOB), page_size=2)
    assert [(e.action, e.actor) for e in entries] == [("gate.approve", BOB), ("gate.propose", ALICE)]
    approve_entry = entries[0]
    assert f"proposed by {ALICE}" in approve_entry.reason and f"approved by {BOB}" in approve_entry.reason
    assert json.loads(approve_entry.old_json)["release_k"] == before.release_k
    assert json.loads(approve_entry.new_json)["release_k"] == target
    assert entries[1].target == change.review.change_id

    # Decided once: a second approval is refused.
    code, _ = await code_of(admin(mesh, "approver-carol").ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=change.review.change_id), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    listed = await changes(mesh)
    mine = [c for c in listed if c.review.change_id == change.review.change_id]
    assert len(mine) == 1 and mine[0].review.state == admin_pb2.CHANGE_STATE_APPLIED
    assert mine[0].review.proposer == ALICE and mine[0].review.decided_by == BOB


async def test_a_stale_expected_version_at_approval_is_aborted_and_nothing_applied(mesh: WdMesh) -> None:
    start = await gate(mesh)
    first = await propose_k(mesh, ALICE, 1, expected_version=start.version)
    second = await propose_k(mesh, "approver-carol", 0, expected_version=start.version)
    await admin(mesh, BOB).ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=second.review.change_id), timeout=10)
    moved = await gate(mesh)
    assert moved.version == start.version + 1 and moved.release_k == 0
    audited = [e.audit_id for e in await audit(admin(mesh, BOB), page_size=200)]

    code, details = await code_of(admin(mesh, BOB).ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=first.review.change_id), timeout=10))
    assert code == grpc.StatusCode.ABORTED
    assert "expected_version" in details
    assert await gate(mesh) == moved
    listed = await changes(mesh)
    stale = next(c for c in listed if c.review.change_id == first.review.change_id)
    assert stale.review.state == admin_pb2.CHANGE_STATE_PROPOSED  # the approval rolled back whole
    assert [e.audit_id for e in await audit(admin(mesh, BOB), page_size=200)] == audited


async def test_an_expired_proposal_cannot_be_approved(mesh: WdMesh) -> None:
    before = await gate(mesh)
    change = await propose_k(mesh, ALICE, 1 - min(1, before.release_k), index=1)  # replica with a 1 s TTL

    async def expired() -> bool | None:
        return await mesh.pool.fetchval(
            "SELECT expires_at <= now() FROM admin_changes WHERE change_id = $1",
            change.review.change_id) or None

    assert await eventually(expired, timeout=15.0)
    code, details = await code_of(admin(mesh, BOB).ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=change.review.change_id), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in details
    assert await gate(mesh) == before
    listed = await changes(mesh)
    assert next(c for c in listed if c.review.change_id == change.review.change_id).review.state == \
        admin_pb2.CHANGE_STATE_EXPIRED


async def test_a_gate_change_can_be_rejected_and_is_never_applied(mesh: WdMesh) -> None:
    before = await gate(mesh)
    change = await propose_k(mesh, ALICE, 1 - min(1, before.release_k))
    rejected = await admin(mesh, BOB).RejectGateChange(withdraw_pb2.RejectGateChangeRequest(
        change_id=change.review.change_id, reason="not tonight"), timeout=10)
    assert rejected.change.review.state == admin_pb2.CHANGE_STATE_REJECTED
    assert rejected.change.review.decision_reason == "not tonight"
    code, _ = await code_of(admin(mesh, "approver-carol").ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id=change.review.change_id), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await gate(mesh) == before
    top = (await audit(admin(mesh, BOB), page_size=1))[0]
    assert (top.action, top.actor, top.target, top.reason) == ("gate.reject", BOB, change.review.change_id,
                                                               "not tonight")


async def test_a_bad_proposal_is_refused_and_stores_nothing(mesh: WdMesh) -> None:
    listed_before = (await admin(mesh, BOB).ListGateChanges(
        withdraw_pb2.ListGateChangesRequest(page_size=200), timeout=10)).changes
    code, details = await code_of(admin(mesh, ALICE).ProposeGateChange(withdraw_pb2.ProposeGateChangeRequest(
        request=withdraw_pb2.SetGateRequest(config=withdraw_pb2.GateConfig(release_k=1), reason="no mask")),
        timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in details
    code, _ = await code_of(admin(mesh, ALICE).ApproveGateChange(
        withdraw_pb2.ApproveGateChangeRequest(change_id="chg-nope"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    listed_after = (await admin(mesh, BOB).ListGateChanges(
        withdraw_pb2.ListGateChangesRequest(page_size=200), timeout=10)).changes
    assert len(listed_after) == len(listed_before)


async def test_a_rate_change_needs_a_second_operator(mesh: WdMesh) -> None:
    async def bank_rate() -> payout_pb2.ChannelStats:
        reply = await payout_admin(mesh, BOB).GetChannelStats(
            payout_pb2.GetChannelStatsRequest(channel="bank"), timeout=10)
        return reply.channels[0]

    before = await bank_rate()
    assert before.rate_limit_per_second == 50
    code, details = await code_of(payout_admin(mesh, ALICE).SetChannelRate(
        payout_pb2.SetChannelRateRequest(channel="bank", rate_per_second=70), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "four-eyes: propose and approve" in details

    proposed = await payout_admin(mesh, ALICE).ProposeRateChange(payout_pb2.ProposeRateChangeRequest(
        request=payout_pb2.SetChannelRateRequest(channel="bank", rate_per_second=70), reason="more room"),
        timeout=10)
    change_id = proposed.change.review.change_id
    assert (await bank_rate()).rate_limit_per_second == 50
    code, _ = await code_of(payout_admin(mesh, ALICE).ApproveRateChange(
        payout_pb2.ApproveRateChangeRequest(change_id=change_id), timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert (await bank_rate()).rate_limit_per_second == 50

    approved = await payout_admin(mesh, BOB).ApproveRateChange(
        payout_pb2.ApproveRateChangeRequest(change_id=change_id), timeout=10)
    assert approved.change.review.state == admin_pb2.CHANGE_STATE_APPLIED
    assert approved.stats.rate_limit_per_second == 70
    assert (await bank_rate()).rate_limit_per_second == 70
    entries = await audit(payout_admin(mesh, BOB), page_size=2)
    assert [(e.action, e.actor) for e in entries] == [("rate.approve", BOB), ("rate.propose", ALICE)]
    assert json.loads(entries[0].old_json) == {"rate_per_second": 50.0, "unlimited": False}
    assert json.loads(entries[0].new_json) == {"rate_per_second": 70.0, "unlimited": False}
    assert entries[0].target == "bank" and f"proposed by {ALICE}" in entries[0].reason

    # The tools' helper does the same with its two identities.
    stats = await four_eyes.set_rate(four_eyes.header_hands(payout_admin(mesh, None)),
                                     payout_pb2.SetChannelRateRequest(channel="bank", rate_per_second=50))
    assert stats.rate_limit_per_second == 50


async def test_the_admin_audit_lists_each_kind_of_admin_action(mesh: WdMesh) -> None:
    # Compensation run (withdraw_svc).
    await admin(mesh, ALICE).RunCompensation(withdraw_pb2.RunCompensationRequest(dry_run=True), timeout=30)
    top = (await audit(admin(mesh, BOB), page_size=1))[0]
    assert (top.action, top.actor) == ("compensation.run", ALICE)
    assert json.loads(top.new_json)["dry_run"] is True

    # Dead-letter replay (payout_svc).
    replayed = await payout_admin(mesh, ALICE).ReplayDeadLetters(
        payout_pb2.ReplayDeadLettersRequest(channel="alipay"), timeout=10)
    top = (await audit(payout_admin(mesh, BOB), page_size=1))[0]
    assert (top.action, top.actor, top.target) == ("dlq.replay", ALICE, "alipay")
    assert json.loads(top.new_json)["replayed"] == replayed.replayed

    # Gateway faults, old -> new.
    gw_admin = gateway_pb2_grpc.GatewayAdminServiceStub(mesh._channel(mesh.gateway_srv.address, caller=ALICE))
    await gw_admin.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
        faults=gateway_pb2.ChannelFaults(channel="balance", capacity_per_second=40)), timeout=10)
    await gw_admin.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
        faults=gateway_pb2.ChannelFaults(channel="balance")), timeout=10)
    first, second = (await audit(gw_admin, page_size=2))
    assert (first.action, first.actor, first.target) == ("faults.set", ALICE, "balance")
    assert json.loads(first.old_json)["capacity_per_second"] == 40
    assert json.loads(first.new_json)["capacity_per_second"] == 0
    assert json.loads(second.new_json)["capacity_per_second"] == 40

    # Discrepancy resolution (recon_svc), with its own schema.
    recon = await _start("recon_svc", {**mesh.env, "RECON_SVC_DB_SCHEMA": f"recon_wd{mesh.tag}"})
    try:
        await _resolved_discrepancy_is_audited(mesh, recon)
    finally:
        await recon.stop(1.0)


async def _resolved_discrepancy_is_audited(mesh: WdMesh, recon: RunningServer) -> None:
    # recon_svc's table, written as recon_svc's role (withdraw_svc's may not touch it).
    conn = await connect_schema(mesh.env["DATABASE_URL"], f"recon_wd{mesh.tag}")
    try:
        discrepancy_id = await conn.fetchval(
            "INSERT INTO discrepancies (reason, subject, order_id, uid, detail, source) "
            "VALUES ('AMOUNT_MISMATCH', $1, $1, 1, 'arranged by the test', 'realtime') RETURNING id",
            f"o-{mesh.tag}")
    finally:
        await conn.close()
    stub = recon_pb2_grpc.ReconServiceStub(mesh._channel(recon.address, caller=ALICE))
    await stub.ResolveDiscrepancy(recon_pb2.ResolveDiscrepancyRequest(
        discrepancy_id=discrepancy_id, status=recon_pb2.DISCREPANCY_STATUS_ACCEPTED,
        note="known test fixture"), timeout=10)
    top = (await audit(stub, page_size=1))[0]
    assert (top.action, top.actor, top.target) == ("discrepancy.resolve", ALICE, str(discrepancy_id))
    assert json.loads(top.old_json)["status"] == "OPEN"
    assert json.loads(top.new_json) == {"status": "ACCEPTED", "note": "known test fixture"}


async def test_the_admin_audit_pages_newest_first(mesh: WdMesh) -> None:
    stub = admin(mesh, BOB)
    first = await stub.ListAdminAudit(withdraw_pb2.ListAdminAuditRequest(page_size=2), timeout=10)
    assert len(first.entries) == 2 and first.next_page_token
    second = await stub.ListAdminAudit(withdraw_pb2.ListAdminAuditRequest(
        page_size=2, page_token=first.next_page_token), timeout=10)
    ids = [e.audit_id for e in [*first.entries, *second.entries]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    code, _ = await code_of(stub.ListAdminAudit(withdraw_pb2.ListAdminAuditRequest(page_token="x"),
                                                timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_two_operators_approving_at_once_apply_the_change_once(mesh: WdMesh) -> None:
    before = await gate(mesh)
    change = await propose_k(mesh, ALICE, 1 - min(1, before.release_k), expected_version=before.version)
    request = withdraw_pb2.ApproveGateChangeRequest(change_id=change.review.change_id)
    outcomes = await asyncio.gather(admin(mesh, BOB).ApproveGateChange(request, timeout=10),
                                    admin(mesh, "approver-carol", 1).ApproveGateChange(request, timeout=10),
                                    return_exceptions=True)
    applied = [o for o in outcomes if isinstance(o, withdraw_pb2.ApproveGateChangeResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(applied) == 1 and len(refused) == 1, outcomes
    assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await gate(mesh)).version == before.version + 1


async def test_the_schema_refuses_a_self_approved_or_rewritten_change(mesh: WdMesh) -> None:
    change = await propose_k(mesh, ALICE, 1)
    change_id = change.review.change_id
    with pytest.raises(asyncpg.CheckViolationError):
        await mesh.pool.execute(
            "UPDATE admin_changes SET state = 'APPLIED', decided_by = proposer, decided_at = now() "
            "WHERE change_id = $1", change_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await mesh.pool.execute("UPDATE admin_changes SET payload = '{}'::jsonb WHERE change_id = $1",
                                change_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await mesh.pool.execute("DELETE FROM admin_audit WHERE id = (SELECT max(id) FROM admin_audit)")
    await admin(mesh, BOB).RejectGateChange(withdraw_pb2.RejectGateChangeRequest(change_id=change_id),
                                            timeout=10)
    with pytest.raises(asyncpg.CheckViolationError):
        await mesh.pool.execute("UPDATE admin_changes SET state = 'PROPOSED' WHERE change_id = $1", change_id)


@pytest.mark.parametrize("call", [
    "approve-nul", "approve-long", "reject-reason", "list-page-size", "rate-channel", "rate-nan",
])
async def test_bad_input_to_the_change_rpcs_is_invalid_argument(mesh: WdMesh, call: str) -> None:
    wd, po = admin(mesh, BOB), payout_admin(mesh, BOB)
    rate = payout_pb2.SetChannelRateRequest
    calls = {
        "approve-nul": lambda: wd.ApproveGateChange(
            withdraw_pb2.ApproveGateChangeRequest(change_id="chg\x00"), timeout=10),
        "approve-long": lambda: po.ApproveRateChange(payout_pb2.ApproveRateChangeRequest(change_id="c" * 65),
                                                     timeout=10),
        "reject-reason": lambda: wd.RejectGateChange(withdraw_pb2.RejectGateChangeRequest(
            change_id="chg-x", reason="r" * 501), timeout=10),
        "list-page-size": lambda: po.ListRateChanges(payout_pb2.ListRateChangesRequest(page_size=-1),
                                                     timeout=10),
        "rate-channel": lambda: po.ProposeRateChange(payout_pb2.ProposeRateChangeRequest(
            request=rate(channel="pigeon", rate_per_second=5)), timeout=10),
        "rate-nan": lambda: po.ProposeRateChange(payout_pb2.ProposeRateChangeRequest(
            request=rate(channel="bank", rate_per_second=float("nan"))), timeout=10),
    }
    code, details = await code_of(calls[call]())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
