"""The closed sets that travel as enums: every value the services store has its enum value
and back, so nothing is sent as UNSPECIFIED by oversight."""

from __future__ import annotations

from mesh.admin.v1 import admin_pb2
from mesh.recon.v1 import recon_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.admin_pb import action_pb
from recon_svc.domain import Reason, Source
from recon_svc.servicer import reason_pb, source_pb
from withdraw_svc.domain import RefundState
from withdraw_svc.servicer import _REFUND


def named(enum: object, prefix: str) -> set[str]:
    values = enum.DESCRIPTOR.values  # type: ignore[attr-defined]
    return {v.name.removeprefix(prefix) for v in values if v.number != 0}


def test_every_discrepancy_reason_has_its_enum_value_and_no_other() -> None:
    assert {Reason(r).name for r in Reason} == named(recon_pb2.DiscrepancyReason, "DISCREPANCY_REASON_")
    assert reason_pb("double_payout") == recon_pb2.DISCREPANCY_REASON_DOUBLE_PAYOUT
    assert reason_pb("something_new") == recon_pb2.DISCREPANCY_REASON_UNSPECIFIED


def test_every_discrepancy_source_has_its_enum_value_and_no_other() -> None:
    assert {s.name for s in Source} == named(recon_pb2.DiscrepancySource, "DISCREPANCY_SOURCE_")
    assert source_pb("self_check") == recon_pb2.DISCREPANCY_SOURCE_SELF_CHECK
    assert source_pb("") == recon_pb2.DISCREPANCY_SOURCE_UNSPECIFIED


def test_every_refund_state_has_its_enum_value() -> None:
    assert set(_REFUND) == set(RefundState)
    sent = {_REFUND[s] for s in RefundState if s is not RefundState.NONE}
    assert sent == {getattr(withdraw_pb2, f"REFUND_STATE_{name}")
                    for name in named(withdraw_pb2.RefundState, "REFUND_STATE_")}
    assert _REFUND[RefundState.NONE] == withdraw_pb2.REFUND_STATE_UNSPECIFIED


def test_admin_actions_map_by_name() -> None:
    assert action_pb("gate.set") == admin_pb2.ADMIN_ACTION_GATE_SET
    assert action_pb("rate.approve") == admin_pb2.ADMIN_ACTION_RATE_APPROVE
    assert action_pb("discrepancy.resolve") == admin_pb2.ADMIN_ACTION_DISCREPANCY_RESOLVE
    assert action_pb("dlq.replay") == admin_pb2.ADMIN_ACTION_DLQ_REPLAY
    assert action_pb("gate.teleport") == admin_pb2.ADMIN_ACTION_UNSPECIFIED
