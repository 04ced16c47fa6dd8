"""Reward tokens: what verifies, and the exact cause named for each refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from campaign import tokens
from campaign.tokens import KeyRing, RewardGrant, TokenError, keyring_from_env, parse_keys, sign, verify
from meshkit.errors import Code, InvalidArgument

NOW = 1_800_000_000
KEYS = {"k1": b"secret-one", "k2": b"secret-two"}


def grant(**overrides: object) -> RewardGrant:
    values: dict[str, object] = {
        "reward_id": "rp-2022-0001", "uid": 4242, "amount_fen": 188, "source": "red_packet",
        "issued_at": NOW - 60,
    }
    values.update(overrides)
    return RewardGrant(**values)  # type: ignore[arg-type]


def refusal(token: str, *, expected_uid: int | None = 4242, now: float = NOW,
            keys: dict[str, bytes] = KEYS) -> TokenError:
    with pytest.raises(TokenError) as info:
        verify(token, keys, expected_uid=expected_uid, now=now, max_age_s=3600)
    return info.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_returns_the_grant() -> None:
    token = sign(grant(), "k1", KEYS["k1"])
    assert verify(token, KEYS, expected_uid=4242, now=NOW, max_age_s=3600) == grant()


def test_refusals_are_invalid_argument() -> None:
    err = refusal("nonsense")
    assert isinstance(err, InvalidArgument)
    assert err.code is Code.INVALID_ARGUMENT


def test_altered_payload_is_named_altered() -> None:
    token = sign(grant(), "k1", KEYS["k1"])
    payload, seal = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["amount_fen"] = 188_000
    altered = b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()) + "." + seal
    err = refusal(altered)
    assert err.reason == tokens.ALTERED
    assert "altered" in err.message


def test_token_signed_with_another_secret_is_named_forged() -> None:
    forged = sign(grant(amount_fen=999_999), "k1", b"guessed-secret")
    err = refusal(forged)
    assert err.reason == tokens.FORGED
    assert "forged" in err.message


def test_unknown_key_id() -> None:
    err = refusal(sign(grant(), "k9", b"whatever"))
    assert err.reason == tokens.UNKNOWN_KEY
    assert "k9" in err.message


def test_expiry_boundary() -> None:
    fresh = sign(grant(issued_at=NOW - 3600), "k1", KEYS["k1"])
    assert verify(fresh, KEYS, expected_uid=None, now=NOW, max_age_s=3600).uid == 4242
    old = sign(grant(issued_at=NOW - 3601), "k1", KEYS["k1"])
    err = refusal(old)
    assert err.reason == tokens.EXPIRED
    assert "expired" in err.message


def test_issued_far_in_the_future_is_refused() -> None:
    err = refusal(sign(grant(issued_at=NOW + 3600), "k1", KEYS["k1"]))
    assert err.reason == tokens.NOT_YET_VALID
    # Small clock skew is tolerated.
    assert verify(sign(grant(issued_at=NOW + 60), "k1", KEYS["k1"]), KEYS,
                  expected_uid=4242, now=NOW).uid == 4242


def test_someone_elses_token() -> None:
    err = refusal(sign(grant(uid=7), "k1", KEYS["k1"]), expected_uid=4242)
    assert err.reason == tokens.WRONG_USER
    assert "another user" in err.message
    # The bulk path names no owner: the token's uid is taken as is.
    assert verify(sign(grant(uid=7), "k1", KEYS["k1"]), KEYS, expected_uid=None, now=NOW).uid == 7


@pytest.mark.parametrize("token", [
    "", "no-dot", "a.b.c", "!!!.???", b64(b"not json") + "." + b64(b"x" * 40),
    b64(b"[1,2]") + "." + b64(b"x" * 40), b64(b'{"kid":"k1"}') + "." + b64(b"short"),
    "A" * 2000 + "." + "B",
])
def test_malformed(token: str) -> None:
    assert refusal(token).reason == tokens.MALFORMED


def sealed(body_json: str) -> str:
    """A token over exactly this JSON text, correctly signed with k1."""
    payload = b64(body_json.encode())
    mac = hmac.digest(KEYS["k1"], payload.encode(), "sha256")
    check = hashlib.sha256(payload.encode()).digest()[:8]
    return payload + "." + b64(mac + check)


def body_with_uid(uid: str) -> str:
    return (f'{{"kid":"k1","reward_id":"r1","uid":{uid},"amount_fen":100,"source":"x",'
            f'"issued_at":{int(NOW)}}}')


# Signed with our key but unusable: a uid that is negative, beyond BIGINT (as an integer, and
# as the float a JSON parser makes of a number beyond 64 bits), or not a number at all.
@pytest.mark.parametrize("uid", ["-5", str(2**63), str(2**64), "NaN", "1e3", "true"])
def test_signed_but_unusable_content_is_malformed(uid: str) -> None:
    err = refusal(sealed(body_with_uid(uid)), expected_uid=None)
    assert err.reason == tokens.MALFORMED
    assert "uid" in err.message or "JSON" in err.message


def test_largest_bigint_uid_is_accepted() -> None:
    assert verify(sealed(body_with_uid(str(2**63 - 1))), KEYS, expected_uid=None, now=NOW).uid == 2**63 - 1


def test_key_rotation_old_key_still_verifies() -> None:
    ring = KeyRing(KEYS, active="k1")
    by_old = sign(grant(), "k2", KEYS["k2"])
    by_active = ring.sign(grant())
    assert json.loads(base64.urlsafe_b64decode(by_active.split(".")[0] + "=="))["kid"] == "k1"
    for token in (by_old, by_active):
        assert verify(token, ring.keys, expected_uid=4242, now=NOW).reward_id == "rp-2022-0001"


@pytest.mark.parametrize(("field", "value"), [
    ("reward_id", ""), ("reward_id", "has space"), ("reward_id", "x" * 129), ("uid", 0),
    ("uid", True), ("uid", 2**63), ("amount_fen", 0), ("amount_fen", 10**12), ("source", ""),
    ("issued_at", 0),
])
def test_sign_refuses_bad_grants_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        sign(grant(**{field: value}), "k1", KEYS["k1"])
    assert field in info.value.message


def test_parse_keys() -> None:
    assert parse_keys("k1:s1, k2:s:2") == {"k1": b"s1", "k2": b"s:2"}
    for bad in ("", "k1", "k1:", ":s", "k1:a,k1:b", "bad id:s"):
        with pytest.raises(ValueError):
            parse_keys(bad)


def test_keyring_from_env() -> None:
    ring = keyring_from_env({"REWARD_TOKEN_KEYS": "a:1,b:2", "REWARD_TOKEN_ACTIVE_KEY": "b"})
    assert ring.active == "b" and ring.keys == {"a": b"1", "b": b"2"}
    assert keyring_from_env({}).keys == {"dev": b"dev-secret"}
    assert keyring_from_env({"REWARD_TOKEN_KEYS": "a:1,b:2"}).active == "a"
    with pytest.raises(ValueError):
        keyring_from_env({"REWARD_TOKEN_KEYS": "a:1", "REWARD_TOKEN_ACTIVE_KEY": "z"})


def test_cli_issue_prints_a_token_the_ledger_verifies(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from campaign.__main__ import main

    monkeypatch.setenv("REWARD_TOKEN_KEYS", "k1:secret-one,k2:secret-two")
    monkeypatch.setenv("REWARD_TOKEN_ACTIVE_KEY", "k2")
    assert main(["issue", "--uid", "77", "--amount-fen", "520", "--source", "card_draw",
                 "--reward-id", "card-77-1", "--issued-at", str(NOW)]) == 0
    token = capsys.readouterr().out.strip()
    expected = RewardGrant("card-77-1", 77, 520, "card_draw", NOW)
    assert verify(token, KEYS, expected_uid=77, now=NOW) == expected
    assert main(["issue", "--uid", "0", "--amount-fen", "5"]) == 2
    assert "uid" in capsys.readouterr().err


def _corpus() -> list[str]:
    """Good tokens and every kind of bad one, including near misses of the checks that
    verify_many inlines (boundaries of age, size and field ranges)."""
    good = sign(grant(), "k1", KEYS["k1"])
    payload, seal = good.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))

    def signed_body(**changes: object) -> str:
        content = b64(json.dumps({**body, **changes}, separators=(",", ":"), sort_keys=True).encode())
        message = content.encode()
        mac = hmac.digest(KEYS["k1"], message, "sha256") + hashlib.sha256(message).digest()[:8]
        return f"{content}.{b64(mac)}"

    return [
        good,
        sign(grant(uid=7), "k2", KEYS["k2"]),
        sign(grant(reward_id="r" * tokens.MAX_REWARD_ID_LEN), "k1", KEYS["k1"]),
        sign(grant(issued_at=NOW - 3600), "k1", KEYS["k1"]),      # exactly as old as allowed
        sign(grant(issued_at=NOW - 3601), "k1", KEYS["k1"]),      # one second too old
        sign(grant(issued_at=NOW + tokens.MAX_CLOCK_SKEW_S), "k1", KEYS["k1"]),
        sign(grant(issued_at=NOW + tokens.MAX_CLOCK_SKEW_S + 1), "k1", KEYS["k1"]),
        sign(grant(), "k1", b"not-the-secret"),                   # forged
        sign(grant(), "k9", b"whatever"),                         # unknown key
        payload + "." + seal[:-2],                                # seal too short
        payload + "." + seal + "AA",                              # seal too long
        payload + "x." + seal,                                    # altered payload
        payload + "." + seal + ".",                               # two dots
        payload.replace("e", "!", 1) + "." + seal,                # outside the alphabet
        payload + "=." + seal,                                    # padding inside
        "", ".", "nonsense", good + "A" * tokens.MAX_TOKEN_LEN,
        signed_body(uid=True), signed_body(uid=0), signed_body(uid=2**63), signed_body(uid=2**63 - 1),
        signed_body(amount_fen=tokens.MAX_AMOUNT_FEN + 1), signed_body(amount_fen=1.5),
        signed_body(source=""), signed_body(source="s" * 33), signed_body(source="bad source"),
        signed_body(reward_id="bad id"), signed_body(reward_id=""), signed_body(issued_at="1"),
        signed_body(kid=5), signed_body(reward_id=None),
        b64(b"[1,2]") + "." + seal,
    ]


def test_verify_many_agrees_with_verify_token_by_token() -> None:
    corpus = _corpus()
    checked = tokens.verify_many(corpus, KEYS, now=NOW, max_age_s=3600)
    assert len(checked) == len(corpus)
    accepted = 0
    for token, outcome in zip(corpus, checked, strict=True):
        try:
            expected = verify(token, KEYS, expected_uid=None, now=NOW, max_age_s=3600)
        except TokenError as exc:
            assert isinstance(outcome, TokenError), token
            assert (outcome.reason, outcome.message) == (exc.reason, exc.message), token
        else:
            accepted += 1
            assert outcome == expected, token
    # The corpus exercises both sides.
    assert 5 <= accepted < len(corpus) - 20


def test_mac_matches_the_standard_hmac_for_short_and_long_keys() -> None:
    for secret in (b"k", b"s" * 64, b"long" * 40):
        for message in (b"", b"payload", b"x" * 1000):
            assert tokens._mac(secret, message) == hmac.digest(secret, message, "sha256")
