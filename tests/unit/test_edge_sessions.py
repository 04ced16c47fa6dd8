"""Session tokens (edge.sessions): issued, verified, and refused when expired, tampered with,
signed with another key or none, or for a key rotated out."""

from __future__ import annotations

import base64
import json
import logging

import jwt
import pytest

from edge import __main__ as edge_cli
from edge import client as edge_client
from edge import sessions
from edge.client import UserSessions
from edge.sessions import SessionError, SessionKeys, issue, keys_from_env, parse_keys, verify
from meshkit.errors import Code

NOW = 1_780_000_000.0
SECRET_A = b"a" * 32
SECRET_B = b"b" * 40
KEYS = SessionKeys({"k1": SECRET_A, "k2": SECRET_B}, "k1")


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused(token: str, keys: SessionKeys = KEYS, now: float = NOW) -> SessionError:
    with pytest.raises(SessionError) as info:
        verify(token, keys.keys, now=now)
    assert info.value.code is Code.UNAUTHENTICATED
    return info.value


def test_issued_token_verifies_as_its_uid_with_the_claims_of_the_brief() -> None:
    token = issue(KEYS, 42, now=NOW)
    assert verify(token, KEYS.keys, now=NOW + 1) == 42
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    claims = json.loads(_unb64(_segments(token)[1]))
    assert claims["sub"] == "42" and claims["aud"] == "wallet-mesh"
    assert claims["iat"] == int(NOW) and claims["exp"] == int(NOW) + sessions.DEFAULT_LIFETIME_S
    assert len(claims["jti"]) == 24
    # Two tokens of one user differ: jti is random.
    assert issue(KEYS, 42, now=NOW) != token


def test_a_token_is_accepted_again_until_it_expires_and_refused_from_exp_on() -> None:
    token = issue(KEYS, 7, now=NOW, lifetime_s=60)
    assert verify(token, KEYS.keys, now=NOW + 59) == 7
    assert verify(token, KEYS.keys, now=NOW + 59) == 7  # a bearer credential: replay is presentation
    error = _refused(token, now=NOW + 60)
    assert error.reason == sessions.EXPIRED
    assert "expired" in error.message
    assert _refused(token, now=NOW + 3600).reason == sessions.EXPIRED


def test_a_token_issued_in_the_future_beyond_skew_is_not_yet_valid() -> None:
    token = issue(KEYS, 7, now=NOW + sessions.MAX_CLOCK_SKEW_S + 5)
    assert _refused(token).reason == sessions.NOT_YET_VALID
    assert verify(issue(KEYS, 7, now=NOW + 10), KEYS.keys, now=NOW) == 7


def test_payload_changed_with_the_signature_kept_is_refused() -> None:
    header, payload, signature = _segments(issue(KEYS, 42, now=NOW))
    claims = json.loads(_unb64(payload))
    for change in ({"sub": "43"}, {"exp": claims["exp"] + 86_400}, {"aud": "other"}):
        forged = _b64(json.dumps({**claims, **change}).encode())
        error = _refused(f"{header}.{forged}.{signature}")
        assert error.reason == sessions.BAD_SIGNATURE
    # The header is signed too: naming the other key keeps nothing valid.
    other_header = _b64(json.dumps({"alg": "HS256", "kid": "k2", "typ": "JWT"}).encode())
    assert _refused(f"{other_header}.{payload}.{signature}").reason == sessions.BAD_SIGNATURE


def test_a_token_signed_with_another_secret_under_our_key_id_is_refused() -> None:
    attacker = SessionKeys({"k1": b"x" * 32}, "k1")
    error = _refused(issue(attacker, 42, now=NOW))
    assert error.reason == sessions.BAD_SIGNATURE
    assert "k1" in error.message


def test_alg_none_and_other_algorithms_are_refused() -> None:
    claims = {"sub": "42", "aud": "wallet-mesh", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j"}
    header = _b64(json.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        assert _refused(token).reason in (sessions.BAD_SIGNATURE, sessions.MALFORMED)
    assert "none" in _refused(f"{header}.{payload}.").message
    hs512 = jwt.encode(claims, SECRET_A * 2, algorithm="HS512", headers={"kid": "k1"})
    assert _refused(hs512).reason == sessions.BAD_SIGNATURE


def test_missing_claims_wrong_audience_bad_sub_and_junk_are_malformed() -> None:
    base = {"sub": "42", "aud": "wallet-mesh", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j"}

    def signed(claims: dict[str, object]) -> str:
        return jwt.encode(claims, SECRET_A, algorithm="HS256", headers={"kid": "k1"})

    for claim in ("sub", "aud", "iat", "exp", "jti"):
        without = {k: v for k, v in base.items() if k != claim}
        assert _refused(signed(without)).reason == sessions.MALFORMED, claim
    assert _refused(signed({**base, "aud": "another-app"})).reason == sessions.MALFORMED
    for sub in ("0", "-1", "042", "abc", str(2**63)):
        assert _refused(signed({**base, "sub": sub})).reason == sessions.MALFORMED, sub
    for junk in ("", "abc", "a.b.c", "x" * 5000):
        assert _refused(junk).reason in (sessions.MISSING, sessions.MALFORMED)


def test_rotation_an_old_key_verifies_while_listed_and_not_after_removal() -> None:
    old = issue(SessionKeys({"k1": SECRET_A}, "k1"), 9, now=NOW)
    rotated = SessionKeys({"k1": SECRET_A, "k2": SECRET_B}, "k2")
    new = issue(rotated, 9, now=NOW)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    assert verify(old, rotated.keys, now=NOW) == 9
    assert verify(new, rotated.keys, now=NOW) == 9
    retired = SessionKeys({"k2": SECRET_B}, "k2")
    assert verify(new, retired.keys, now=NOW) == 9
    error = _refused(old, keys=retired)
    assert error.reason == sessions.UNKNOWN_KEY
    assert "k1" in error.message


def test_keys_are_parsed_and_short_or_malformed_ones_refused() -> None:
    assert parse_keys(f"k1:{'s' * 32}, k2:{'t' * 33}") == {"k1": b"s" * 32, "k2": b"t" * 33}
    with pytest.raises(ValueError, match="31 bytes; at least 32"):
        parse_keys(f"k1:{'s' * 31}")
    for raw in ("", "k1", f":{'s' * 32}", f"k 1:{'s' * 32}", f"k1:{'s' * 32},k1:{'t' * 32}"):
        with pytest.raises(ValueError):
            parse_keys(raw)


def test_keys_from_env_require_keys_unless_dev(caplog: pytest.LogCaptureFixture) -> None:
    listed = {"SESSION_TOKEN_KEYS": f"a:{'s' * 32},b:{'t' * 32}"}
    assert keys_from_env(listed).active == "a"
    assert keys_from_env({**listed, "SESSION_TOKEN_ACTIVE_KEY": "b"}).active == "b"
    with pytest.raises(ValueError, match="not among"):
        keys_from_env({**listed, "SESSION_TOKEN_ACTIVE_KEY": "c"})
    with pytest.raises(ValueError, match="at least 32"):
        keys_from_env({"SESSION_TOKEN_KEYS": "a:short", "MESH_ENV": "dev"})
    for env in ({}, {"MESH_ENV": "prod"}, {"MESH_ENV": ""}):
        with pytest.raises(ValueError, match="SESSION_TOKEN_KEYS is not set"):
            keys_from_env(env)
    with caplog.at_level(logging.WARNING, logger="edge.sessions"):
        dev = keys_from_env({"MESH_ENV": "dev"})
    assert dev.keys == {sessions.DEV_KEY_ID: sessions.DEV_KEY}
    assert len(sessions.DEV_KEY) >= sessions.MIN_KEY_BYTES
    assert any(r.levelno == logging.WARNING and "dev key" in r.getMessage() for r in caplog.records)
    # The secrets never show in a repr (and so not in a log of the settings).
    assert "s" * 32 not in repr(keys_from_env(listed))


def test_issue_refuses_bad_uids_and_lifetimes() -> None:
    for uid in (0, -5, 2**63, True):
        with pytest.raises(ValueError, match="uid"):
            issue(KEYS, uid, now=NOW)
    with pytest.raises(ValueError, match="lifetime"):
        issue(KEYS, 1, now=NOW, lifetime_s=0)


def test_cli_prints_a_token_that_verifies(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SESSION_TOKEN_KEYS", f"cli:{'c' * 32}")
    monkeypatch.delenv("SESSION_TOKEN_ACTIVE_KEY", raising=False)
    assert edge_cli.main(["issue", "--uid", "42", "--lifetime-s", "120"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, b"c" * 32, algorithms=["HS256"], audience="wallet-mesh")
    assert claims["sub"] == "42" and claims["exp"] - claims["iat"] == 120
    monkeypatch.delenv("SESSION_TOKEN_KEYS")
    monkeypatch.delenv("MESH_ENV", raising=False)
    assert edge_cli.main(["issue", "--uid", "42"]) == 2
    assert "SESSION_TOKEN_KEYS is not set" in capsys.readouterr().err


def test_user_sessions_mint_once_per_uid_and_renew_before_expiry() -> None:
    now = [NOW]
    users = UserSessions(KEYS, lifetime_s=600, clock=lambda: now[0])
    first = users.metadata(42)
    assert users.metadata(42) is first
    ((header, value),) = first
    assert header == "authorization" and value.startswith("Bearer ")
    assert verify(value.removeprefix("Bearer "), KEYS.keys, now=now[0]) == 42
    assert users.metadata(43) != first
    assert users.metadata(42, (("x-mesh-caller", "load"),)) == (*first, ("x-mesh-caller", "load"))
    now[0] += 600 - edge_client.RENEW_BEFORE_S - 1
    assert users.metadata(42) is first
    now[0] += 2  # inside the renewal window: a fresh token that outlives the call
    renewed = users.metadata(42)
    assert renewed != first
    assert verify(renewed[0][1].removeprefix("Bearer "), KEYS.keys, now=now[0] + 500) == 42
