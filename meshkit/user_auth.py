"""Which end user a user-facing RPC acts for: the one place session tokens are read.

A user-facing RPC (the page, confirm, order queries, the bill, the balance) acts for the uid
in the caller's `authorization: Bearer <session token>` metadata (edge.sessions). A uid in
the request body must be that uid or 0 (then the token's is used); another one is
PERMISSION_DENIED, so a signed-in user cannot act for someone else. Domain code never sees
a token: servicers ask this module for the uid and pass it on.

A few of these RPCs are also called by services on no user's behalf (recon_svc and
payout_svc read orders, withdraw_svc reads balances; account_svc uses the coordination
RPC GetOrderStates instead). A call without a bearer token from a
caller listed for that RPC in INTERNAL_CALLERS is let through acting for nobody in
particular. The caller's name is meshkit.identity's: the certificate's under mutual TLS, a
self-declared header without it (inside a trusted network only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import grpc

from edge.client import AUTHORIZATION_HEADER
from edge.sessions import (
    DEV_KEYS,
    MISSING,
    Session,
    SessionError,
    SessionKeys,
    parse_keys,
    verify_session,
    with_active_key,
)
from meshkit.errors import PermissionDenied
from meshkit.identity import caller_of
from meshkit.secrets import key_ring

_BEARER = "bearer "
# Verified tokens kept per replica. An app sends one token with every call of a session,
# and PyJWT takes ~60 µs to verify one; a hit is a dict lookup and an expiry check. The key
# is the whole token, so an altered one is a miss and verified afresh. Keys are fixed for a
# process's life (a rotation restarts it), so an entry never outlives the key that made it.
VERIFIED_CACHE_SIZE = 20_000

# RPC ("Service/Method") -> services that may call it without a session token.
INTERNAL_CALLERS: Mapping[str, frozenset[str]] = {
    "WithdrawService/GetOrder": frozenset({"payout_svc", "recon_svc"}),
    "AccountService/GetBalance": frozenset({"withdraw_svc"}),
}


def session_keys_at_start(environ: Mapping[str, str] | None = None) -> SessionKeys:
    """The keys that verify session tokens, by the rules of every key ring (meshkit.secrets):
    a service without usable keys does not start, unless MESH_ENV=dev."""
    env = os.environ if environ is None else environ
    keys = key_ring("SESSION_TOKEN_KEYS", env.get("SESSION_TOKEN_KEYS", ""), parse_keys, DEV_KEYS, env)
    try:
        return with_active_key(keys, env)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


class UserAuth:
    def __init__(self, keys: SessionKeys, clock: Callable[[], float] = time.time,
                 internal_callers: Mapping[str, frozenset[str]] = INTERNAL_CALLERS) -> None:
        self.keys = keys.keys
        self.clock = clock
        self.internal_callers = internal_callers
        self._verified: dict[str, Session] = {}

    def uid(self, context: grpc.aio.ServicerContext, rpc: str, body_uid: int) -> int:
        """The uid an RPC with a uid in its body acts for. An internal caller gets body_uid
        as sent (validated by the domain like any uid)."""
        signed_in = self.signed_in(context, rpc)
        if signed_in is None:
            return body_uid
        if body_uid not in (0, signed_in):
            raise PermissionDenied(
                f"uid {body_uid} is not the signed-in user's: a session acts only for its own uid",
                reason="SESSION_WRONG_USER",
            )
        return signed_in

    def signed_in(self, context: grpc.aio.ServicerContext, rpc: str) -> int | None:
        """The uid of the session token, or None for an internal caller allowed on rpc
        without one. SessionError (UNAUTHENTICATED) otherwise."""
        token = _bearer_of(context)
        if token is None:
            if caller_of(context) in self.internal_callers.get(rpc, frozenset()):
                return None
            raise SessionError(
                f"{rpc} needs a signed-in user: send authorization: Bearer <session token>",
                reason=MISSING,
            )
        return self._verify(token).uid

    def _verify(self, token: str) -> Session:
        now = self.clock()
        session = self._verified.get(token)
        if session is not None and now < session.expires_at:
            return session
        # Not seen, or expired since: verified afresh, which says why it is refused.
        self._verified.pop(token, None)
        session = verify_session(token, self.keys, now=now)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = session
        return session


def _bearer_of(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_HEADER:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if text[: len(_BEARER)].lower() != _BEARER:
                raise SessionError("authorization metadata must be \"Bearer <session token>\"",
                                   reason=MISSING)
            return text[len(_BEARER):].strip()
    return None
