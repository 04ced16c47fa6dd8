"""meshkit/four_eyes.py: who may decide a proposed admin change, when, and when the direct
change is allowed at all; withdraw_svc/gate_changes.py: what a gate proposal stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from meshkit.errors import Code, DomainError
from meshkit.four_eyes import Change, ChangeState, FourEyesSettings, check_approver, check_decidable
from withdraw_svc.domain import GATE_FIELDS, GateConfig
from withdraw_svc.gate_changes import GateRequest, checked_request

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def change(state: ChangeState = ChangeState.PROPOSED, proposer: str = "ops-alice") -> Change:
    return Change(change_id="chg-1", kind="gate", target="gate", payload={}, reason="r", proposer=proposer,
                  created_at=NOW, expires_at=NOW + timedelta(hours=1), state=state)


def refusal(call: object, *args: object) -> DomainError:
    with pytest.raises(DomainError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


def test_the_proposer_cannot_approve_their_own_change() -> None:
    err = refusal(check_approver, change(), "ops-alice")
    assert err.code is Code.PERMISSION_DENIED and err.reason == "SELF_APPROVAL"
    check_approver(change(), "ops-bob")


@pytest.mark.parametrize("approver", ["", "anonymous"])
def test_an_anonymous_caller_cannot_approve(approver: str) -> None:
    assert refusal(check_approver, change(proposer="anonymous"), approver).reason == "ANONYMOUS_OPERATOR"


@pytest.mark.parametrize("state", [ChangeState.APPLIED, ChangeState.REJECTED])
def test_a_decided_change_is_decided_once(state: ChangeState) -> None:
    err = refusal(check_decidable, change(state), False)
    assert err.code is Code.FAILED_PRECONDITION and err.reason == "CHANGE_DECIDED"


@pytest.mark.parametrize("state, expired", [(ChangeState.PROPOSED, True), (ChangeState.EXPIRED, False)])
def test_an_expired_change_cannot_be_decided(state: ChangeState, expired: bool) -> None:
    err = refusal(check_decidable, change(state), expired)
    assert err.reason == "CHANGE_EXPIRED" and "expired" in err.message
    check_decidable(change(), False)


def test_four_eyes_is_on_unless_a_dev_mesh_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_ENV", raising=False)
    monkeypatch.delenv("ADMIN_FOUR_EYES", raising=False)
    monkeypatch.delenv("ADMIN_CHANGE_TTL_S", raising=False)
    assert FourEyesSettings.from_env() == FourEyesSettings(required=True, ttl_s=3600)
    monkeypatch.setenv("MESH_ENV", "dev")
    assert FourEyesSettings.from_env().required  # dev alone does not turn it off
    monkeypatch.setenv("ADMIN_FOUR_EYES", "false")
    assert not FourEyesSettings.from_env().required


@pytest.mark.parametrize("mesh_env", ["", "prod", "DEV"])
def test_turning_four_eyes_off_outside_a_dev_mesh_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, mesh_env: str,
) -> None:
    monkeypatch.setenv("MESH_ENV", mesh_env)
    monkeypatch.setenv("ADMIN_FOUR_EYES", "false")
    with pytest.raises(SystemExit, match="MESH_ENV=dev"):
        FourEyesSettings.from_env()


@pytest.mark.parametrize("ttl", ["0", "-5", str(8 * 86400)])
def test_a_proposal_lifetime_out_of_range_refuses_to_start(monkeypatch: pytest.MonkeyPatch, ttl: str) -> None:
    monkeypatch.setenv("ADMIN_CHANGE_TTL_S", ttl)
    monkeypatch.delenv("ADMIN_FOUR_EYES", raising=False)
    with pytest.raises(SystemExit, match="ADMIN_CHANGE_TTL_S"):
        FourEyesSettings.from_env()


def test_a_stored_gate_request_is_the_request_exactly() -> None:
    # What approval applies is what was proposed: every field of the patch (an empty
    # bind_prompt too), the mask, the expected version and the reason survive the JSON.
    patch = GateConfig(timezone="Asia/Shanghai", closed_start="19:00", closed_end="01:00", release_modulus=10,
                       release_k=0, bind_prompt="", auto_release=True, auto_release_drain_seconds=90,
                       auto_release_step=2)
    request = checked_request(patch, ["*"], 7, "campaign night")
    stored = GateRequest.from_json(json.loads(json.dumps(request.to_json())))
    assert stored == request and stored.mask == GATE_FIELDS


def test_a_gate_proposal_is_checked_like_set_gate() -> None:
    with pytest.raises(DomainError, match="update_mask is required"):
        checked_request(GateConfig(release_k=1), [], 0, "")
    with pytest.raises(DomainError, match="release_modulus"):
        checked_request(GateConfig(release_modulus=0), ["*"], 0, "")
    with pytest.raises(DomainError, match="expected_version"):
        checked_request(GateConfig(), ["release_k"], -1, "")
    assert checked_request(GateConfig(release_k=3), ["release_k"], 0, "").mask == ("release_k",)
