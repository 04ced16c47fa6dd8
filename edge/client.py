"""Session tokens on the calling side: what the app (and every tool or benchmark standing in
for it) sends with user-facing RPCs. Minting is cheap but not free (an HMAC and a JSON
encode), so a token is minted once per uid and reused until shortly before it expires."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from edge.sessions import DEFAULT_LIFETIME_S, SessionKeys, issue, keys_from_env

Metadata = tuple[tuple[str, str], ...]
AUTHORIZATION_HEADER = "authorization"
# A token this close to its exp is replaced: a call in flight must not expire on the way.
RENEW_BEFORE_S = 60


def bearer_metadata(token: str) -> Metadata:
    """Call metadata carrying a session token."""
    return ((AUTHORIZATION_HEADER, f"Bearer {token}"),)


class UserSessions:
    """Signed-in metadata per uid, from the keys of SESSION_TOKEN_KEYS (or the dev key)."""

    def __init__(self, keys: SessionKeys, lifetime_s: int = DEFAULT_LIFETIME_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._cache: dict[int, tuple[float, Metadata]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UserSessions:
        return cls(keys_from_env(os.environ if environ is None else environ))

    def metadata(self, uid: int, extra: Metadata = ()) -> Metadata:
        """`authorization: Bearer <token of uid>`, plus `extra` (e.g. a caller header)."""
        now = self.clock()
        cached = self._cache.get(uid)
        if cached is None or cached[0] - now < RENEW_BEFORE_S:
            if len(self._cache) >= 1_000_000:  # a load run's users, never without bound
                self._cache.clear()
            cached = (now + self.lifetime_s, bearer_metadata(issue(self.keys, uid, now=now,
                                                                    lifetime_s=self.lifetime_s)))
            self._cache[uid] = cached
        return cached[1] + extra if extra else cached[1]
