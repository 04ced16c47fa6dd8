"""The batch side of payout_svc's Redis adapters against real Redis: the limiter's take
(up to N calls in one script, the quota held in every window, the wait for the rest),
locks for many orders in one round trip, and one XACK for a batch."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from meshkit.order_locks import OrderLocks
from meshkit.redis_keys import Keys
from payout_svc.domain import UNLIMITED, ChannelRate
from payout_svc.rate_limiter import RateLimiter
from payout_svc.streams import ChannelQueue
from tests.integration.test_payout_redis import job, publish
from tools.loadlib.stats import max_in_window


@pytest.fixture
async def keys(mesh_env: dict[str, str], redis_client: redis.Redis) -> AsyncIterator[Keys]:
    keys = Keys(f"{mesh_env['MESH_KEY_PREFIX']}-rb{uuid.uuid4().hex[:6]}")
    yield keys
    async for key in redis_client.scan_iter(match=f"{keys.prefix}:*"):
        await redis_client.delete(key)


async def test_take_grants_part_of_a_batch_and_holds_the_quota_in_every_window(
    redis_client: redis.Redis, keys: Keys
) -> None:
    limiter = RateLimiter(redis_client, keys)
    rate = ChannelRate(40.0)
    granted, wait = await limiter.take("bank", rate, 32)
    # 10 ms of burst at 40/s is one call: the rest is told to wait about one interval.
    assert granted == 1 and 0 < wait <= 0.03
    total = granted
    deadline = time.time() + 2.2

    async def user() -> None:
        nonlocal total
        while time.time() < deadline:
            got, wait = await limiter.take("bank", rate, 32)
            total += got
            if got < 32:
                await asyncio.sleep(wait)  # told by the limiter: the schedule is the subject

    await asyncio.gather(*(user() for _ in range(6)))
    admitted = [score / 1e6 for _m, score in
                await redis_client.zrange(keys.rate_window("bank"), 0, -1, withscores=True)]
    # Entries of the last second are all still in the log: none of them beyond the quota.
    assert max_in_window(admitted) <= 40
    assert total >= 0.85 * 40 * 2.2  # and the channel stays busy at its rate


async def test_take_at_a_high_rate_grants_many_at_once_and_unlimited_all(
    redis_client: redis.Redis, keys: Keys
) -> None:
    limiter = RateLimiter(redis_client, keys)
    granted, _wait = await limiter.take("bank", ChannelRate(5000.0), 100)
    assert 40 <= granted <= 51  # 10 ms of slots at 5000/s
    seconds, _ = await redis_client.time()
    assert await limiter.take("alipay", UNLIMITED, 64) == (64, 0.0)
    counted = [await redis_client.get(f"{keys.rate_window('alipay')}:{s}") for s in (seconds, seconds + 1)]
    assert sum(int(c or 0) for c in counted) == 64  # counted for the stats, never waited


async def test_a_lowered_rate_still_counts_the_calls_of_the_last_second(
    redis_client: redis.Redis, keys: Keys
) -> None:
    limiter = RateLimiter(redis_client, keys)
    total = 0
    started = time.monotonic()
    while total < 60:
        got, wait = await limiter.take("bank", ChannelRate(1000.0), 100)
        total += got
        await asyncio.sleep(wait)  # told by the limiter: the schedule is the subject
    # A new rate starts a new schedule, but the log still holds the calls just made: at
    # 20/s nothing more may start until the oldest of them is a window old.
    granted, wait = await limiter.take("bank", ChannelRate(20.0), 32)
    assert granted == 0
    assert 1.0 - (time.monotonic() - started) - 0.1 <= wait <= 1.0


async def test_a_new_master_lineage_fences_the_limiter_for_one_window(
    redis_client: redis.Redis, keys: Keys
) -> None:
    """A master promoted from a lagging replica may lack the last second's log: the limiter
    grants nothing for one window after the replication id it stored has changed, and a
    first use (no record) waits for nothing."""
    limiter = RateLimiter(redis_client, keys)
    rate = ChannelRate(1000.0)
    granted, _wait = await limiter.take("bank", rate, 5)
    assert granted == 5  # the first use of a channel is not fenced
    fence = f"{keys.rate_window('bank')}:lineage"
    replid = (await redis_client.hget(fence, "replid") or b"").decode()
    # The master's replication id (40 hex digits); on a Redis Cluster, of the channel's master.
    assert len(replid) == 40 and int(replid, 16) >= 0
    # What a promoted replica sees: the record written under the old master's id.
    await redis_client.hset(fence, mapping={"replid": "0" * 40, "until": "0"})
    granted, wait = await limiter.take("bank", rate, 5)
    assert granted == 0 and 0.9 < wait <= 1.01
    assert await limiter.admit("bank", rate) > 0.9  # the single-call path is fenced too
    await asyncio.sleep(wait)
    granted, _wait = await limiter.take("bank", rate, 5)
    assert granted == 5


async def test_many_locks_in_one_round_trip_are_exclusive_and_owned(
    redis_client: redis.Redis, keys: Keys
) -> None:
    locks = OrderLocks(redis_client, keys, ttl_ms=500)
    other = await locks.acquire("o-2")
    assert other is not None
    held = await locks.acquire_many(["o-1", "o-2", "o-3"])
    assert sorted(held) == ["o-1", "o-3"]
    await locks.extend_many(held)
    assert 400 < await redis_client.pttl(keys.order_lock("o-1")) <= 500
    await locks.release_many({**held, "o-2": "not-the-owner"})
    assert await redis_client.get(keys.order_lock("o-1")) is None
    assert (await redis_client.get(keys.order_lock("o-2"))).decode() == other


async def test_a_batch_is_acked_in_one_call(redis_client: redis.Redis, keys: Keys) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.ensure("bank")
    for _ in range(3):
        await publish(redis_client, keys, job())
    batch = await queue.read("bank", 10, 100)
    assert len(batch) == 3
    await queue.touch_many("bank", batch)
    await queue.ack_many("bank", batch[:2])
    pending = await redis_client.xpending(keys.payout_stream("bank"), "payout")
    assert pending["pending"] == 1 and pending["min"].decode() == batch[2].entry_id
