"""meshkit.user_auth: the uid a user-facing RPC acts for, from its bearer token; services
listed for an RPC may call it without one; services refuse to start without session keys."""

from __future__ import annotations

from typing import Any

import pytest

from edge.client import bearer_metadata
from edge.sessions import SessionError, SessionKeys, issue
from meshkit import user_auth
from meshkit.errors import Code, PermissionDenied
from meshkit.user_auth import UserAuth, session_keys_at_start

NOW = 1_780_000_000.0
KEYS = SessionKeys({"k1": b"k" * 32}, "k1")
RPC = "WithdrawService/ListOrders"


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, Any], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


def _auth() -> UserAuth:
    return UserAuth(KEYS, clock=lambda: NOW,
                    internal_callers={"WithdrawService/GetOrder": frozenset({"recon_svc"})})


def _as(uid: int) -> Any:
    return FakeContext(bearer_metadata(issue(KEYS, uid, now=NOW)))


def test_body_uid_absent_or_equal_acts_for_the_token_and_another_is_denied() -> None:
    auth = _auth()
    assert auth.uid(_as(42), RPC, 0) == 42
    assert auth.uid(_as(42), RPC, 42) == 42
    with pytest.raises(PermissionDenied) as info:
        auth.uid(_as(42), RPC, 43)
    assert info.value.code is Code.PERMISSION_DENIED
    assert "uid 43 is not the signed-in user's" in info.value.message


def test_the_bearer_scheme_is_case_insensitive_and_anything_else_is_unauthenticated() -> None:
    token = issue(KEYS, 5, now=NOW)
    auth = _auth()
    assert auth.uid(FakeContext((("authorization", f"bearer {token}"),)), RPC, 0) == 5
    assert auth.uid(FakeContext((("authorization", f"Bearer {token}".encode()),)), RPC, 0) == 5
    for metadata in ((), (("authorization", token),), (("authorization", "Basic abc"),),
                     (("x-mesh-caller", "recon_svc"),)):
        with pytest.raises(SessionError) as info:
            auth.uid(FakeContext(metadata), RPC, 5)
        assert info.value.code is Code.UNAUTHENTICATED


def test_a_listed_service_without_a_token_acts_for_nobody_in_particular() -> None:
    auth = _auth()
    recon = FakeContext((("x-mesh-caller", "recon_svc"),))
    assert auth.signed_in(recon, "WithdrawService/GetOrder") is None
    assert auth.uid(recon, "WithdrawService/GetOrder", 77) == 77
    with pytest.raises(SessionError):
        auth.signed_in(FakeContext((("x-mesh-caller", "payout_svc"),)), "WithdrawService/GetOrder")
    # With a token, even a listed service is held to the token's uid.
    with_token = FakeContext((("x-mesh-caller", "recon_svc"),
                              *bearer_metadata(issue(KEYS, 9, now=NOW))))
    assert auth.signed_in(with_token, "WithdrawService/GetOrder") == 9


def test_services_refuse_to_start_without_usable_session_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="SESSION_TOKEN_KEYS is not set"):
        session_keys_at_start({})
    with pytest.raises(SystemExit, match="at least 32"):
        session_keys_at_start({"SESSION_TOKEN_KEYS": "k1:short"})
    assert session_keys_at_start({"MESH_ENV": "dev"}).active == "dev"

    from account_svc.settings import Settings as AccountSettings
    from withdraw_svc.settings import Settings as WithdrawSettings

    # The suite's own keys and opt-outs are in the environment: cleared, one by one.
    for name in ("SESSION_TOKEN_KEYS", "SESSION_TOKEN_ACTIVE_KEY", "REWARD_TOKEN_ACTIVE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MESH_ENV", raising=False)
    monkeypatch.delenv("ADMIN_FOUR_EYES", raising=False)  # the suite's dev opt-out needs MESH_ENV=dev
    monkeypatch.setenv("REWARD_TOKEN_KEYS", f"w1:{'w' * 32}")  # so the session keys are what is missing
    for name in ("MESH_TLS_CA", "MESH_TLS_CERT", "MESH_TLS_KEY", "MESH_CERTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MESH_INSECURE", "1")  # and not the transport
    with pytest.raises(SystemExit, match="SESSION_TOKEN_KEYS"):
        WithdrawSettings.from_env()
    with pytest.raises(SystemExit, match="SESSION_TOKEN_KEYS"):
        AccountSettings.from_env()
    monkeypatch.setenv("SESSION_TOKEN_KEYS", f"r1:{'r' * 32}")
    assert WithdrawSettings.from_env().session_keys.keys == {"r1": b"r" * 32}
    assert AccountSettings.from_env().session_keys.active == "r1"


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [NOW]
    auth = UserAuth(KEYS, clock=lambda: now[0])
    token = issue(KEYS, 42, now=NOW, lifetime_s=60)
    calls: list[str] = []
    real = user_auth.verify_session

    def counting(token: str, keys: Any, *, now: float) -> Any:
        calls.append(token)
        return real(token, keys, now=now)

    monkeypatch.setattr(user_auth, "verify_session", counting)
    context = FakeContext(bearer_metadata(token))
    assert [auth.uid(context, RPC, 0) for _ in range(3)] == [42, 42, 42]
    assert len(calls) == 1
    # A changed token is another key: verified afresh, and refused.
    header, _, signature = token.split(".")
    other_payload = issue(KEYS, 43, now=NOW).split(".")[1]
    with pytest.raises(SessionError):
        auth.uid(FakeContext(bearer_metadata(f"{header}.{other_payload}.{signature}")), RPC, 0)
    assert len(calls) == 2
    # Past exp the remembered token is refused as expired, like a fresh one.
    now[0] = NOW + 60
    with pytest.raises(SessionError) as info:
        auth.uid(context, RPC, 0)
    assert info.value.reason == "SESSION_EXPIRED"
