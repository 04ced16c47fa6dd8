"""A user's bound payout methods, as the withdraw page shows them and confirm checks
them: this replica's memory, then the Redis copy, then the gateway."""

from __future__ import annotations

import logging
import time

from meshkit.errors import Unavailable
from withdraw_svc.domain import Limits, check_method
from withdraw_svc.peers import Method, PeerError
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
        # Bound methods per uid, in front of the Redis copy. Only hits are trusted: a method
        # missing here is looked up again, so a binding made a moment ago is never refused.
        self._local: dict[int, tuple[float, list[Method]]] = {}

    async def for_page(self, uid: int) -> list[Method]:
        """Weak dependency: the gateway's list, or the cached one, or none."""
        try:
            methods = await self.gateway.methods(uid, self.page_deadline_s)
        except PeerError as err:
            log.info("page: methods unavailable for uid %d: %s", uid, err)
            try:
                return await self.cache.cached_methods(uid) or []
            except Exception:
                return []
        await self._cache(uid, methods)
        return methods

    async def channel_of(self, uid: int, method_id: str) -> str:
        """The channel of `method_id` if it is bound to uid and its channel enabled; the
        refusal otherwise."""
        local = self._local.get(uid)
        if local is not None and local[0] > time.monotonic():
            hit = next((m for m in local[1] if m.method_id == method_id), None)
            if hit is not None:
                return check_method(hit.channel, method_id, uid, self.limits)
        try:
            cached = await self.cache.cached_methods(uid)
        except Exception:
            cached = None
        hit = next((m for m in cached or [] if m.method_id == method_id), None)
        if hit is not None:
            self._remember(uid, cached or [])
            return check_method(hit.channel, method_id, uid, self.limits)
        # Not cached (or not in the cached list: the user may have just bound it): ask.
        try:
            methods = await self.gateway.methods(uid)
        except PeerError as err:
            raise Unavailable(
                "checking the payout method failed; retry", reason="METHODS_UNAVAILABLE"
            ) from err
        await self._cache(uid, methods)
        found = next((m for m in methods if m.method_id == method_id), None)
        return check_method(found.channel if found else None, method_id, uid, self.limits)

    def _remember(self, uid: int, methods: list[Method]) -> None:
        if len(self._local) >= LOCAL_METHODS_MAX:
            self._local.pop(next(iter(self._local)))  # oldest first
        self._local[uid] = (time.monotonic() + self.cache_s, methods)

    async def _cache(self, uid: int, methods: list[Method]) -> None:
        self._remember(uid, methods)
        try:
            await self.cache.cache_methods(uid, methods, self.cache_s)
        except Exception:
            log.warning("could not cache methods of uid %d", uid, exc_info=True)
