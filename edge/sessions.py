"""Session tokens: who the end user is, as the app edge vouches for it after sign-in.

A session token is a JWT (RFC 7519) signed with HS256 by the edge and sent by the app in
`authorization: Bearer <token>` on every user-facing RPC. Its `kid` header names the key
that signed it, so keys rotate: every key listed in SESSION_TOKEN_KEYS verifies, only
SESSION_TOKEN_ACTIVE_KEY signs. Claims: `sub` (the uid, a decimal string), `aud`
("wallet-mesh"), `iat`, `exp` and `jti` (a random id, for the logs of whoever revokes).

A session token is a bearer credential: whoever holds it is that user until `exp`. There is
no server-side revocation list, so lifetimes are short (15 minutes by default); a token
presented again before it expires is accepted again, by design, exactly like a cookie.

Pure except for the clock, which the caller passes: verification never reads time itself
(PyJWT's own exp/iat checks are off and done here against `now`).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jwt

from meshkit.errors import Code, DomainError
from meshkit.secrets import parse_key_list

AUDIENCE = "wallet-mesh"
ALGORITHM = "HS256"
DEFAULT_LIFETIME_S = 15 * 60
# HS256 with a shorter secret is guessable offline from one token (RFC 7518 §3.2).
MIN_KEY_BYTES = 32
# The app's clock and ours disagree a little; an `iat` further ahead than this is not skew.
MAX_CLOCK_SKEW_S = 60
# A JWT of ours is ~250 bytes: anything far longer is refused before it is parsed.
MAX_TOKEN_LEN = 2048
MAX_UID = 2**63 - 1
# Used only when MESH_ENV=dev and no keys are configured; it is in the source, so it is no secret.
DEV_KEY_ID = "dev"
DEV_KEY = b"dev-session-key-well-known-not-secret-0123456789"
DEV_KEYS = f"{DEV_KEY_ID}:{DEV_KEY.decode()}"

_UID_RE = re.compile(r"[1-9][0-9]{0,18}")
_REQUIRED = ["sub", "aud", "iat", "exp", "jti"]

log = logging.getLogger(__name__)

MISSING = "SESSION_MISSING"
MALFORMED = "SESSION_MALFORMED"
UNKNOWN_KEY = "SESSION_UNKNOWN_KEY"
BAD_SIGNATURE = "SESSION_BAD_SIGNATURE"
EXPIRED = "SESSION_EXPIRED"
NOT_YET_VALID = "SESSION_NOT_YET_VALID"


class SessionError(DomainError):
    """The caller is not signed in as anyone we can trust. `reason` is one of the constants
    above. Messages never repeat the token."""

    code = Code.UNAUTHENTICATED


class Session(NamedTuple):
    """A verified session: who, and until when (Unix seconds)."""

    uid: int
    expires_at: float


@dataclass(frozen=True)
class SessionKeys:
    """Secrets by key id (never printed), and the id new tokens are signed with."""

    keys: Mapping[str, bytes] = field(repr=False)
    active: str


def parse_keys(raw: str) -> dict[str, bytes]:
    """`k1:secret1,k2:secret2` -> {"k1": b"secret1", ...}; every secret at least 32 bytes."""
    return parse_key_list(raw, "session key", MIN_KEY_BYTES)


def keys_from_env(environ: Mapping[str, str]) -> SessionKeys:
    """Keys from SESSION_TOKEN_KEYS, the signing key from SESSION_TOKEN_ACTIVE_KEY (default:
    the first listed). Without keys: ValueError, unless MESH_ENV=dev, which gets the
    well-known dev key and a WARNING. (The callers that mint: the CLI and the tools. The
    services read their keys through meshkit.secrets, which applies the same rules.)"""
    raw = environ.get("SESSION_TOKEN_KEYS", "").strip()
    if not raw:
        if environ.get("MESH_ENV", "") != "dev":
            raise ValueError("SESSION_TOKEN_KEYS is not set (\"<kid>:<secret of 32+ bytes>,...\"); "
                             "only MESH_ENV=dev may run with the well-known dev key")
        log.warning("SESSION_TOKEN_KEYS is not set: MESH_ENV=dev, so session tokens use the "
                    "well-known dev key; anyone can sign in as anyone")
        return SessionKeys({DEV_KEY_ID: DEV_KEY}, DEV_KEY_ID)
    try:
        keys = parse_keys(raw)
    except ValueError as exc:
        raise ValueError(f"SESSION_TOKEN_KEYS: {exc}") from exc
    return with_active_key(keys, environ)


def with_active_key(keys: Mapping[str, bytes], environ: Mapping[str, str]) -> SessionKeys:
    """`keys` with SESSION_TOKEN_ACTIVE_KEY (default: the first listed) as the signing key."""
    active = environ.get("SESSION_TOKEN_ACTIVE_KEY", "").strip() or next(iter(keys))
    if active not in keys:
        raise ValueError(f"SESSION_TOKEN_ACTIVE_KEY {active!r} is not among SESSION_TOKEN_KEYS")
    return SessionKeys(keys, active)


def issue(keys: SessionKeys, uid: int, *, now: float, lifetime_s: int = DEFAULT_LIFETIME_S) -> str:
    """A token saying `uid` is signed in from `now` for `lifetime_s` seconds."""
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 < uid <= MAX_UID:
        raise ValueError(f"uid must be an integer in 1..{MAX_UID}")
    if lifetime_s <= 0:
        raise ValueError("lifetime_s must be positive")
    issued = int(now)
    claims = {
        "sub": str(uid), "aud": AUDIENCE, "iat": issued, "exp": issued + lifetime_s,
        "jti": secrets.token_hex(12),
    }
    return jwt.encode(claims, keys.keys[keys.active], algorithm=ALGORITHM, headers={"kid": keys.active})


def verify(token: str, keys: Mapping[str, bytes], *, now: float) -> int:
    """The uid `token` signs in, or SessionError saying why it signs in nobody."""
    return verify_session(token, keys, now=now).uid


def verify_session(token: str, keys: Mapping[str, bytes], *, now: float) -> Session:
    """verify(), with the token's expiry: what a cache of verified tokens needs."""
    if not token:
        raise SessionError("session token missing: send authorization: Bearer <token>", reason=MISSING)
    if len(token) > MAX_TOKEN_LEN:
        raise SessionError(f"session token malformed: longer than {MAX_TOKEN_LEN} characters",
                           reason=MALFORMED)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise SessionError("session token malformed: not a JWT", reason=MALFORMED) from exc
    # Only HS256 is ever accepted: "none" and every asymmetric algorithm are refused here,
    # before a key is even looked up (and again by `algorithms=` below).
    if header.get("alg") != ALGORITHM:
        raise SessionError(f"session token refused: algorithm {str(header.get('alg'))[:16]!r} "
                           f"is not {ALGORITHM}", reason=BAD_SIGNATURE)
    kid = header.get("kid")
    secret = keys.get(kid) if isinstance(kid, str) else None
    if secret is None:
        raise SessionError(f"session token signed with unknown key id {str(kid)[:32]!r}",
                           reason=UNKNOWN_KEY)
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], audience=AUDIENCE,
            options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False,
                     "verify_nbf": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise SessionError(f"session token signature is not from key {kid!r}: altered or forged",
                           reason=BAD_SIGNATURE) from exc
    except jwt.InvalidAudienceError as exc:
        raise SessionError(f"session token is not for {AUDIENCE!r}", reason=MALFORMED) from exc
    except jwt.InvalidTokenError as exc:
        raise SessionError(f"session token malformed: {str(exc)[:120]}", reason=MALFORMED) from exc
    return _session_of(claims, now)


def _session_of(claims: Mapping[str, Any], now: float) -> Session:
    exp, iat, sub = claims.get("exp"), claims.get("iat"), claims.get("sub")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float) or \
            isinstance(exp, bool) or isinstance(iat, bool):
        raise SessionError("session token malformed: exp and iat must be numbers", reason=MALFORMED)
    if now >= exp:
        raise SessionError(f"session token expired {int(now - exp)} s ago: sign in again", reason=EXPIRED)
    if iat > now + MAX_CLOCK_SKEW_S:
        raise SessionError(f"session token issued {int(iat - now)} s in the future", reason=NOT_YET_VALID)
    if not isinstance(sub, str) or not _UID_RE.fullmatch(sub) or int(sub) > MAX_UID:
        raise SessionError("session token malformed: sub is not a uid", reason=MALFORMED)
    return Session(int(sub), float(exp))
