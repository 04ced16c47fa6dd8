"""Protobuf of the admin tables: a change's review and an audit entry (mesh.admin.v1)."""

from __future__ import annotations

import json

from mesh.admin.v1 import admin_pb2
from meshkit.admin_store import AuditEntry
from meshkit.four_eyes import Change, ChangeState
from meshkit.timeconv import to_ts

_STATE = {
    ChangeState.PROPOSED: admin_pb2.CHANGE_STATE_PROPOSED,
    ChangeState.APPLIED: admin_pb2.CHANGE_STATE_APPLIED,
    ChangeState.REJECTED: admin_pb2.CHANGE_STATE_REJECTED,
    ChangeState.EXPIRED: admin_pb2.CHANGE_STATE_EXPIRED,
}


def review_pb(change: Change) -> admin_pb2.ChangeReview:
    review = admin_pb2.ChangeReview(
        change_id=change.change_id, proposer=change.proposer, create_time=to_ts(change.created_at),
        expire_time=to_ts(change.expires_at), state=_STATE[change.state], decided_by=change.decided_by,
        reason=change.reason, decision_reason=change.decision_reason,
    )
    if change.decided_at is not None:
        review.decide_time.CopyFrom(to_ts(change.decided_at))
    return review


def action_pb(action: str) -> admin_pb2.AdminAction:
    """The enum of a stored action ("gate.set" is ADMIN_ACTION_GATE_SET); UNSPECIFIED for
    one this version does not know."""
    known: admin_pb2.AdminAction | None = getattr(
        admin_pb2, f"ADMIN_ACTION_{action.replace('.', '_').upper()}", None)
    return known if known is not None else admin_pb2.ADMIN_ACTION_UNSPECIFIED


def audit_entry_pb(entry: AuditEntry) -> admin_pb2.AdminAuditEntry:
    return admin_pb2.AdminAuditEntry(
        audit_id=entry.audit_id, audit_time=to_ts(entry.at), actor=entry.actor, action=entry.action,
        action_kind=action_pb(entry.action),
        target=entry.target, reason=entry.reason,
        old_json="" if entry.old is None else json.dumps(entry.old, sort_keys=True),
        new_json="" if entry.new is None else json.dumps(entry.new, sort_keys=True),
    )
