"""The bind event: a per-uid version counter in Redis that withdraw_svc's methods cache
compares (meshkit.redis_keys.Keys.methods_version)."""

from __future__ import annotations

import logging

import redis.asyncio as redis

from meshkit.redis_keys import METHODS_VERSION_TTL_S, Keys

log = logging.getLogger(__name__)


class RedisMethodEvents:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def bound(self, uid: int) -> None:
        """INCR and refresh the expiry in one MULTI. A failure is logged, not raised: the bind
        is committed and answered; withdraw_svc's cached list then lives out its TTL
        (WITHDRAW_METHODS_CACHE_S), and confirm, which asks the gateway on any miss, never
        refuses the new method meanwhile."""
        key = self.keys.methods_version(uid)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, METHODS_VERSION_TTL_S)
                await pipe.execute()
        except Exception:
            log.warning("could not bump the methods version of uid %d", uid, exc_info=True)
