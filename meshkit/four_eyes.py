"""Four-eyes admin changes, the rules: a change proposed by one operator takes effect only
when a different operator approves it, before it expires. Who may approve at all (the
approver role) is the access policy's business; here: not the proposer, not anonymous.

Direct changes (SetGate, SetChannelRate) are refused unless the mesh says, twice, that it
is a developer's: MESH_ENV=dev and ADMIN_FOUR_EYES=false. ADMIN_FOUR_EYES=false anywhere
else refuses to start rather than silently keeping or dropping the rule.

Pure: no grpc, asyncpg or redis."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from meshkit import validate
from meshkit.errors import FailedPrecondition, NotFound, PermissionDenied
from meshkit.settings import env_bool, env_int, env_str

ANONYMOUS = "anonymous"
DEFAULT_TTL_S = 3600  # ADMIN_CHANGE_TTL_S default: an hour to find a second operator
MAX_TTL_S = 7 * 86400
MAX_CHANGE_ID_LEN = 64
MAX_DECISION_REASON_LEN = 500


class ChangeState(Enum):
    PROPOSED = "PROPOSED"
    APPLIED = "APPLIED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class FourEyesSettings:
    """required: direct changes refused; ttl_s: how long a proposal waits for approval."""

    required: bool = True
    ttl_s: int = DEFAULT_TTL_S

    @classmethod
    def from_env(cls) -> FourEyesSettings:
        dev = env_str("MESH_ENV", "") == "dev"
        required = env_bool("ADMIN_FOUR_EYES", True)
        if not required and not dev:
            raise SystemExit("ADMIN_FOUR_EYES=false is accepted only with MESH_ENV=dev: outside a "
                             "developer's mesh every gate and rate change needs a second operator")
        ttl_s = env_int("ADMIN_CHANGE_TTL_S", 3600)
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise SystemExit(f"ADMIN_CHANGE_TTL_S must be between 1 and {MAX_TTL_S}, got {ttl_s}")
        return cls(required=required, ttl_s=ttl_s)


@dataclass(frozen=True)
class Change:
    """A proposal: the full request it applies (payload) and its review."""

    change_id: str
    kind: str
    target: str
    payload: dict[str, Any]
    reason: str
    proposer: str
    created_at: datetime
    expires_at: datetime
    state: ChangeState
    decided_by: str = ""
    decided_at: datetime | None = None
    decision_reason: str = ""


def new_change_id() -> str:
    return f"chg-{uuid.uuid4().hex}"


def direct_change_refused(what: str, propose: str, approve: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"four-eyes: propose and approve ({what} takes effect only when a different operator "
        f"approves it: {propose}, then {approve})", reason="FOUR_EYES_REQUIRED")


def check_operator(actor: str, doing: str) -> str:
    """A named caller: an anonymous one cannot be told apart from another anonymous one."""
    if not actor or actor == ANONYMOUS:
        raise PermissionDenied(f"four-eyes: {doing} needs a caller identity", reason="ANONYMOUS_OPERATOR")
    return actor


def check_change_id(change_id: str) -> str:
    return validate.identifier("change_id", change_id, max_len=MAX_CHANGE_ID_LEN)


def change_not_found(change_id: str) -> NotFound:
    return NotFound(f"change {change_id} not found", reason="CHANGE_NOT_FOUND")


def check_decidable(change: Change, expired: bool) -> None:
    """A change is decided once, while it is PROPOSED and not expired."""
    if change.state is ChangeState.EXPIRED:
        expired = True
    elif change.state is not ChangeState.PROPOSED:
        raise FailedPrecondition(f"change {change.change_id} is {change.state.value}, not PROPOSED",
                                 reason="CHANGE_DECIDED")
    if expired:
        raise FailedPrecondition(
            f"change {change.change_id} expired at {change.expires_at.isoformat()}; propose it again",
            reason="CHANGE_EXPIRED")


def check_approver(change: Change, approver: str) -> None:
    check_operator(approver, "approving")
    if approver == change.proposer:
        raise PermissionDenied(
            f"four-eyes: {approver} proposed change {change.change_id} and cannot approve it; "
            "a different operator must", reason="SELF_APPROVAL")
