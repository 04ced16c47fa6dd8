"""meshkit/four_eyes.py: who may decide a proposed admin change, when, and when the direct
change is allowed at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshkit.errors import Code, DomainError
from meshkit.four_eyes import Change, ChangeState, FourEyesSettings, check_approver, check_decidable

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
