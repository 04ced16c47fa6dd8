"""The order lock shared by payout_svc's workers and withdraw_svc's compensation: one key
per order id (Keys.order_lock) holding its owner's token, with an expiry, released or
extended only by its owner.

A convenience that keeps two workers off one order; the guarantees are withdraw_svc's
compare-and-set and the gateway's idempotency. Not redis-py's `redis.asyncio.lock.Lock`:
it is one object and one round trip per key, and a payout batch takes all its locks in one
round trip. bench/order_lock_batch.py, a batch of 32 on an idle host: 1.2 ms in one
pipeline, 3.7 ms with Lock gathered, 6.3 ms one after another (5-10x on a loaded one)."""

from __future__ import annotations

import secrets
from typing import Any

import redis.asyncio as redis

from meshkit.redis_keys import Keys

# Compare-and-delete / compare-and-extend: only the owner touches its lock (it may have
# expired and been taken by someone else meanwhile).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def new_token() -> str:
    return secrets.token_hex(12)


class OrderLocks:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_ms: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_ms = ttl_ms
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)

    async def acquire(self, order_id: str, ttl_ms: int | None = None) -> str | None:
        """The owner token of the lock taken (held for ttl_ms, else this holder's default),
        None when someone holds it."""
        token = new_token()
        ok = await self.redis.set(self.keys.order_lock(order_id), token, nx=True, px=ttl_ms or self.ttl_ms)
        return token if ok else None

    async def release(self, order_id: str, token: str) -> bool:
        return bool(await self._release(keys=[self.keys.order_lock(order_id)], args=[token]))

    async def extend(self, order_id: str, token: str) -> bool:
        return bool(await self._extend(keys=[self.keys.order_lock(order_id)], args=[token, self.ttl_ms]))

    async def acquire_many(self, order_ids: list[str]) -> dict[str, str]:
        """acquire() for many orders in one round trip: the tokens of the locks taken."""
        tokens = [new_token() for _ in order_ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id, token in zip(order_ids, tokens, strict=True):
                pipe.set(self.keys.order_lock(order_id), token, nx=True, px=self.ttl_ms)
            taken = await pipe.execute()
        return {o: t for o, t, ok in zip(order_ids, tokens, taken, strict=True) if ok}

    async def release_many(self, held: dict[str, str]) -> None:
        await self._each(_RELEASE, held, [])

    async def extend_many(self, held: dict[str, str]) -> None:
        await self._each(_EXTEND, held, [self.ttl_ms])

    async def _each(self, script: str, held: dict[str, str], extra: list[Any]) -> None:
        """One script call per lock, pipelined without MULTI: the locks spread over slots,
        and on a cluster the pipeline sends each node its own. EVAL, not EVALSHA: a
        cluster pipeline does not load a script a node lacks (a new master after a
        failover), and these scripts are a few dozen bytes."""
        if not held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id, token in held.items():
                pipe.eval(script, 1, self.keys.order_lock(order_id), token, *extra)
            await pipe.execute()
