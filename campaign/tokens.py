"""Signed reward tokens: what the campaign hands a user for a red packet or a card prize,
and what account_svc verifies before it credits anything.

A token is `<payload>.<seal>`, both base64url without padding:
- payload: compact JSON of the grant plus `kid`, the id of the key that signed it, so keys
  can rotate (every key still listed verifies; only the active one signs).
- seal: HMAC-SHA256(secret[kid], payload) followed by the first 8 bytes of SHA-256(payload).

The HMAC alone decides whether a token is accepted. The unkeyed digest only tells, once the
HMAC has failed, *why*: a payload changed after signing no longer matches its digest
(ALTERED), while a self-consistent token whose HMAC is wrong was signed without our secret
(FORGED). HMAC cannot tell those apart by itself, and "altered" vs "forged" is what the
support desk needs to hear.

Pure module: no I/O, the caller passes keys and the clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from meshkit.errors import InvalidArgument
from meshkit.secrets import KID_RE, parse_key_list

DEFAULT_KEYS = "dev:dev-secret"
DEFAULT_MAX_AGE_S = 7 * 24 * 3600
# Clocks of the campaign and the ledger disagree a little; more than this is not skew.
MAX_CLOCK_SKEW_S = 300
MAX_REWARD_ID_LEN = 128
MAX_SOURCE_LEN = 32
MAX_TOKEN_LEN = 1024
# A single reward above 1,000,000 yuan is not a red packet, whatever signed it.
MAX_AMOUNT_FEN = 100_000_000
# Accounts are BIGINT: a larger uid could never be credited, so it is refused up front.
MAX_UID = 2**63 - 1

_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_MAC_LEN = 32
_CHECK_LEN = 8
_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]+")


class TokenError(InvalidArgument):
    """A token that must credit nothing. `reason` is one of the constants below."""


MALFORMED = "MALFORMED"
UNKNOWN_KEY = "UNKNOWN_KEY"
ALTERED = "ALTERED"
FORGED = "FORGED"
EXPIRED = "EXPIRED"
NOT_YET_VALID = "NOT_YET_VALID"
WRONG_USER = "WRONG_USER"


class RewardGrant(NamedTuple):
    """One reward as the campaign issued it. `issued_at` is Unix seconds. (A named tuple:
    the bulk path builds hundreds of thousands of these a second.)"""

    reward_id: str
    uid: int
    amount_fen: int
    source: str
    issued_at: int


@dataclass(frozen=True)
class KeyRing:
    """Secrets by key id, and the id new tokens are signed with."""

    keys: Mapping[str, bytes]
    active: str

    def sign(self, grant: RewardGrant) -> str:
        return sign(grant, self.active, self.keys[self.active])


def parse_keys(raw: str) -> dict[str, bytes]:
    """`k1:secret1,k2:secret2` -> {"k1": b"secret1", "k2": b"secret2"}."""
    return parse_key_list(raw, "reward token key")


def keyring_from_env(environ: Mapping[str, str]) -> KeyRing:
    """Keys from REWARD_TOKEN_KEYS and the signing key from REWARD_TOKEN_ACTIVE_KEY
    (default: the first key listed)."""
    keys = parse_keys(environ.get("REWARD_TOKEN_KEYS") or DEFAULT_KEYS)
    active = environ.get("REWARD_TOKEN_ACTIVE_KEY") or next(iter(keys))
    if active not in keys:
        raise ValueError(f"REWARD_TOKEN_ACTIVE_KEY {active!r} is not among REWARD_TOKEN_KEYS")
    return KeyRing(keys, active)


def validate_grant(grant: RewardGrant) -> None:
    """Raise InvalidArgument naming the first bad field."""
    if not isinstance(grant.reward_id, str) or not grant.reward_id:
        raise InvalidArgument("reward_id must be a non-empty string", reason="BAD_REWARD_ID")
    if len(grant.reward_id) > MAX_REWARD_ID_LEN or not _ID_RE.fullmatch(grant.reward_id):
        raise InvalidArgument(
            f"reward_id must be at most {MAX_REWARD_ID_LEN} characters of [A-Za-z0-9_.:-]",
            reason="BAD_REWARD_ID",
        )
    if not _is_int(grant.uid) or not 0 < grant.uid <= MAX_UID:
        raise InvalidArgument(f"uid must be an integer in 1..{MAX_UID}", reason="BAD_UID")
    if not _is_int(grant.amount_fen) or not 0 < grant.amount_fen <= MAX_AMOUNT_FEN:
        raise InvalidArgument(
            f"amount_fen must be an integer in 1..{MAX_AMOUNT_FEN}", reason="BAD_AMOUNT"
        )
    if (not isinstance(grant.source, str) or not grant.source
            or len(grant.source) > MAX_SOURCE_LEN or not _ID_RE.fullmatch(grant.source)):
        raise InvalidArgument(
            f"source must be 1..{MAX_SOURCE_LEN} characters of [A-Za-z0-9_.:-]", reason="BAD_SOURCE"
        )
    if not _is_int(grant.issued_at) or grant.issued_at <= 0:
        raise InvalidArgument("issued_at must be positive Unix seconds", reason="BAD_ISSUED_AT")


def sign(grant: RewardGrant, key_id: str, secret: bytes) -> str:
    validate_grant(grant)
    if not KID_RE.fullmatch(key_id):
        raise InvalidArgument(f"key id {key_id!r} is not valid", reason="BAD_KEY_ID")
    body = {
        "kid": key_id,
        "reward_id": grant.reward_id,
        "uid": grant.uid,
        "amount_fen": grant.amount_fen,
        "source": grant.source,
        "issued_at": grant.issued_at,
    }
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    message = payload.encode()
    seal = hmac.digest(secret, message, "sha256") + hashlib.sha256(message).digest()[:_CHECK_LEN]
    return f"{payload}.{_b64(seal)}"


def verify(
    token: str,
    keys: Mapping[str, bytes],
    *,
    expected_uid: int | None,
    now: float,
    max_age_s: int = DEFAULT_MAX_AGE_S,
) -> RewardGrant:
    """The grant inside `token`, or TokenError saying why it must credit nothing.
    `expected_uid` None accepts any owner (the bulk path, where the token names the user)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN or token.count(".") != 1:
        raise TokenError("token malformed: expected <payload>.<signature>", reason=MALFORMED)
    payload, _, seal_text = token.partition(".")
    try:
        raw = _unb64(payload)
        seal = _unb64(seal_text)
        # orjson: a quarter of the stdlib's time, and stricter (no NaN or Infinity), which
        # only turns more junk into MALFORMED.
        body = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("token malformed: not base64url JSON", reason=MALFORMED) from exc
    if not isinstance(body, dict) or len(seal) != _MAC_LEN + _CHECK_LEN:
        raise TokenError("token malformed: bad payload or signature length", reason=MALFORMED)

    kid = body.get("kid")
    secret = keys.get(kid) if isinstance(kid, str) else None
    if secret is None:
        raise TokenError(f"token signed with unknown key id {str(kid)[:32]!r}", reason=UNKNOWN_KEY)
    message = payload.encode()
    if not hmac.compare_digest(_mac(secret, message), seal[:_MAC_LEN]):
        if hashlib.sha256(message).digest()[:_CHECK_LEN] != seal[_MAC_LEN:]:
            raise TokenError("token altered: payload was changed after signing", reason=ALTERED)
        raise TokenError(f"token forged: signature is not from key {kid!r}", reason=FORGED)

    grant = _grant_of(body)
    age = now - grant.issued_at
    if age > max_age_s:
        raise TokenError(
            f"token expired: issued {int(age)} s ago, older than {max_age_s} s", reason=EXPIRED
        )
    if age < -MAX_CLOCK_SKEW_S:
        raise TokenError(f"token not yet valid: issued {int(-age)} s in the future", reason=NOT_YET_VALID)
    if expected_uid is not None and grant.uid != expected_uid:
        raise TokenError(
            f"token belongs to another user (uid {grant.uid}, not {expected_uid})", reason=WRONG_USER
        )
    return grant


# Per secret, SHA-256 states already fed the HMAC inner and outer pads (RFC 2104): an HMAC
# is then two C-level copies and updates, about half of what the stdlib's HMAC object costs,
# for each of the hundreds of thousands of tokens a second the bulk path checks.
_PADS: dict[bytes, tuple[Any, Any]] = {}
_SHA256_BLOCK = 64


def _pads(secret: bytes) -> tuple[Any, Any]:
    pads = _PADS.get(secret)
    if pads is None:
        if len(_PADS) >= 64:  # keys rotate rarely; never let the cache grow without bound
            _PADS.clear()
        key = hashlib.sha256(secret).digest() if len(secret) > _SHA256_BLOCK else secret
        key = key.ljust(_SHA256_BLOCK, b"\0")
        pads = _PADS[secret] = (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
                                hashlib.sha256(bytes(b ^ 0x5C for b in key)))
    return pads


def _mac(secret: bytes, message: bytes) -> bytes:
    """HMAC-SHA256(secret, message), the same bytes as hmac.digest(secret, message, "sha256")."""
    inner_pad, outer_pad = _pads(secret)
    inner = inner_pad.copy()
    inner.update(message)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def verify_many(
    tokens: Sequence[str], keys: Mapping[str, bytes], *, now: float, max_age_s: int = DEFAULT_MAX_AGE_S
) -> list[RewardGrant | TokenError]:
    """verify(token, expected_uid=None) of every token, in order: its grant or the TokenError
    verify would raise. One loop for a batch of the bulk path, which checks hundreds of
    thousands of tokens a second: the checks of verify() inlined, no exception on the good
    path. A token this loop does not accept in full is handed to verify() itself, so every
    refusal (and its reason) is verify's own; the loop only ever accepts a subset of what
    verify accepts (tests/unit/test_campaign_tokens.py compares the two)."""
    out: list[RewardGrant | TokenError] = []
    append = out.append
    a2b = binascii.a2b_base64
    loads = orjson.loads
    compare = hmac.compare_digest
    fullmatch = _ID_RE.fullmatch
    pad = (b"", b"===", b"==", b"=")
    pads_of: dict[object, tuple[Any, Any]] = {}
    good_sources: set[str] = set()
    for token in tokens:
        grant = None
        if type(token) is str and len(token) <= MAX_TOKEN_LEN:
            payload, dot, seal_text = token.encode().partition(b".")
            if dot and b"." not in seal_text and payload and seal_text:
                try:
                    raw = a2b(payload.translate(_FROM_URLSAFE) + pad[len(payload) & 3], strict_mode=True)
                    seal = a2b(seal_text.translate(_FROM_URLSAFE) + pad[len(seal_text) & 3], strict_mode=True)
                    body = loads(raw)
                except (binascii.Error, ValueError):
                    body = None
                if type(body) is dict and len(seal) == _MAC_LEN + _CHECK_LEN:
                    kid = body.get("kid")
                    pads = pads_of.get(kid)
                    if pads is None and type(kid) is str and kid in keys:
                        pads = pads_of[kid] = _pads(keys[kid])
                    if pads is not None:
                        inner = pads[0].copy()
                        inner.update(payload)
                        outer = pads[1].copy()
                        outer.update(inner.digest())
                        if compare(outer.digest(), seal[:_MAC_LEN]):
                            grant = _fast_grant(body, now, max_age_s, fullmatch, good_sources)
        if grant is not None:
            append(grant)
            continue
        try:
            append(verify(token, keys, expected_uid=None, now=now, max_age_s=max_age_s))
        except TokenError as exc:
            append(exc)
    return out


def _fast_grant(body: dict[str, Any], now: float, max_age_s: int, fullmatch: Any,
                good_sources: set[str]) -> RewardGrant | None:
    """The grant when every field passes validate_grant's checks and its age verify's; None
    when any might not (verify then decides)."""
    reward_id = body.get("reward_id")
    uid = body.get("uid")
    amount = body.get("amount_fen")
    source = body.get("source")
    issued_at = body.get("issued_at")
    if (type(uid) is int and 0 < uid <= MAX_UID
            and type(amount) is int and 0 < amount <= MAX_AMOUNT_FEN
            # The age as verify() computes it, so that the bounds round alike.
            and type(issued_at) is int and issued_at > 0 and -MAX_CLOCK_SKEW_S <= now - issued_at <= max_age_s
            and type(reward_id) is str and 0 < len(reward_id) <= MAX_REWARD_ID_LEN
            and fullmatch(reward_id) is not None
            and type(source) is str):
        if source not in good_sources:
            if not (0 < len(source) <= MAX_SOURCE_LEN and fullmatch(source) is not None):
                return None
            good_sources.add(source)
        return RewardGrant(reward_id, uid, amount, source, issued_at)
    return None


def _grant_of(body: dict[str, Any]) -> RewardGrant:
    get: Any = body.get  # untrusted types: validate_grant checks every one
    grant = RewardGrant(get("reward_id"), get("uid"), get("amount_fen"), get("source"), get("issued_at"))
    try:
        validate_grant(grant)
    except InvalidArgument as exc:
        # Signed by us but unusable: still nothing to credit.
        raise TokenError(f"token malformed: {exc.message}", reason=MALFORMED) from exc
    return grant


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text:
        raise ValueError("empty part")
    # Strict: characters outside the alphabet are an error, not silently skipped.
    return binascii.a2b_base64((text + "=" * (-len(text) % 4)).encode().translate(_FROM_URLSAFE),
                               strict_mode=True)
