"""A user's bound payout methods, as the withdraw page shows them and confirm checks
them: this replica's memory, then the Redis copy, then the gateway.

The Redis copy is tagged with the user's methods version, a counter the gateway bumps
(INCR) after every bind commits (meshkit.redis_keys.Keys.methods_version). The page reads
both in one MGET and uses the copy only while its tag equals the version: after a bind
every replica sees a new version and asks the gateway again. A list is tagged with the
version read *before* the gateway was asked, so a bind that lands during the call leaves
the list tagged with the older version, and it is refreshed on the next view.

Confirm trusts hits only (any version): methods are never unbound, and a method's channel
never changes (a rebind with other data is a conflict), so a method once seen bound is
still bound. A method missing from the copy is looked up at the gateway, so a binding made
a moment ago is never refused. ARCHITECTURE.md ("Bound methods") argues the windows."""

from __future__ import annotations

import asyncio
import logging
import time

from meshkit.errors import Unavailable
from withdraw_svc.domain import Limits, check_method
from withdraw_svc.peers import CachedMethods, Method, PeerError
from withdraw_svc.ports import BoundMethodsSource, MethodsCache

log = logging.getLogger(__name__)

LOCAL_METHODS_MAX = 100_000


class BoundMethods:
    def __init__(self, gateway: BoundMethodsSource, cache: MethodsCache, limits: Limits,
                 cache_s: int, page_deadline_s: float) -> None:
        self.gateway = gateway
        self.cache = cache
        self.limits = limits
        self.cache_s = cache_s
        self.page_deadline_s = page_deadline_s
        # Bound methods per uid, in front of the Redis copy, for confirm's hits only.
        self._local: dict[int, tuple[float, list[Method]]] = {}

    async def for_page(self, uid: int) -> tuple[list[Method], bool]:
        """Weak dependency: (methods, stale). The Redis copy while its version is current,
        else the gateway's list; when the gateway does not answer, whatever copy there is
        (or none), marked stale."""
        version, cached = await self._read_cache(uid, self.page_deadline_s)
        if cached is not None and cached.version == version:
            return cached.methods, False
        try:
            methods = await self.gateway.methods(uid, self.page_deadline_s)
        except PeerError as err:
            log.info("page: methods unavailable for uid %d: %s", uid, err)
            return (cached.methods if cached is not None else []), True
        await self._cache(uid, methods, version)
        return methods, False

    async def channel_of(self, uid: int, method_id: str) -> str:
        """The channel of `method_id` if it is bound to uid and its channel enabled; the
        refusal otherwise."""
        local = self._local.get(uid)
        if local is not None and local[0] > time.monotonic():
            hit = next((m for m in local[1] if m.method_id == method_id), None)
            if hit is not None:
                return check_method(hit.channel, method_id, uid, self.limits)
        version, cached = await self._read_cache(uid)
        hit = next((m for m in cached.methods if m.method_id == method_id), None) if cached else None
        if hit is not None and cached is not None:
            self._remember(uid, cached.methods)
            return check_method(hit.channel, method_id, uid, self.limits)
        # Not cached (or not in the cached list: the user may have just bound it): ask.
        try:
            methods = await self.gateway.methods(uid)
        except PeerError as err:
            raise Unavailable(
                "checking the payout method failed; retry", reason="METHODS_UNAVAILABLE"
            ) from err
        await self._cache(uid, methods, version)
        found = next((m for m in methods if m.method_id == method_id), None)
        return check_method(found.channel if found else None, method_id, uid, self.limits)

    async def _read_cache(self, uid: int, deadline_s: float | None = None
                          ) -> tuple[str | None, CachedMethods | None]:
        """(version, copy); (None, None) when Redis does not answer (within `deadline_s`,
        for the page: a weak dependency does not hold it up): then nothing is cached
        either, since a list cannot be tagged with a version nobody read."""
        try:
            async with asyncio.timeout(deadline_s):
                return await self.cache.methods_with_version(uid)
        except Exception:
            log.warning("could not read the cached methods of uid %d", uid, exc_info=True)
            return None, None

    def _remember(self, uid: int, methods: list[Method]) -> None:
        if len(self._local) >= LOCAL_METHODS_MAX:
            self._local.pop(next(iter(self._local)))  # oldest first
        self._local[uid] = (time.monotonic() + self.cache_s, methods)

    async def _cache(self, uid: int, methods: list[Method], version: str | None) -> None:
        self._remember(uid, methods)
        if version is None:
            return
        try:
            await self.cache.cache_methods(uid, methods, version, self.cache_s)
        except Exception:
            log.warning("could not cache methods of uid %d", uid, exc_info=True)
