"""payout_svc's Redis adapters against real Redis: the shared GCRA limiter, order locks,
and the stream operations (retry copy, dead letters, replay, reclaim, recovery from a wipe)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from meshkit.order_locks import OrderLocks
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.streams import trim_acknowledged
from payout_svc.domain import PAUSED, UNLIMITED, ChannelRate, Job, dead_letter_after
from payout_svc.jobs import decode_job, encode_job
from payout_svc.rate_limiter import RateLimiter
from payout_svc.service import ChannelRates, PayoutAdmin
from payout_svc.streams import ChannelQueue
from tools.loadlib.stats import max_in_window


@pytest.fixture
async def keys(mesh_env: dict[str, str], redis_client: redis.Redis) -> AsyncIterator[Keys]:
    keys = Keys(f"{mesh_env['MESH_KEY_PREFIX']}-rt{uuid.uuid4().hex[:6]}")
    yield keys
    async for key in redis_client.scan_iter(match=f"{keys.prefix}:*"):
        await redis_client.delete(key)


async def test_two_limiter_users_share_one_rate(
    mesh_env: dict[str, str], keys: Keys, redis_client: redis.Redis
) -> None:
    clients = [open_redis(mesh_env["REDIS_URL"]) for _ in range(2)]
    # Each client answers once before twelve users start on it, as every service's client
    # does before it serves: a Redis Cluster client that learns the topology under twelve
    # first commands at once lost a connection mid-handshake in redis-py 8.1.0 (twice in
    # about ten runs of make test-cluster: 'NoneType' object has no attribute 'writelines').
    await asyncio.gather(*(c.ping() for c in clients))
    limiters = [RateLimiter(c, keys) for c in clients]
    granted = 0
    admitted: dict[bytes, float] = {}
    deadline = time.time() + 2.5

    async def user(limiter: RateLimiter) -> None:
        nonlocal granted
        while time.time() < deadline:
            # The limiter's schedule is the subject: each user waits as long as it is told.
            await asyncio.sleep(await limiter.reserve("bank", ChannelRate(50.0)))
            wait = await limiter.admit("bank", ChannelRate(50.0))
            while wait > 0:
                await asyncio.sleep(wait)  # told by the limiter, as a worker would wait
                wait = await limiter.admit("bank", ChannelRate(50.0))
            granted += 1

    users_done = asyncio.Event()

    async def sample_the_log() -> None:
        # Each admission stays in the one-second log for at least a second, stamped with
        # Redis's clock: sampling it often enough collects every one of them.
        while True:
            finished = users_done.is_set()
            for member, score in await redis_client.zrange(keys.rate_window("bank"), 0, -1, withscores=True):
                admitted[member] = score / 1e6
            if finished:
                return
            await asyncio.sleep(0.2)  # the sampling period, well under the log's one second

    async def users() -> None:
        await asyncio.gather(*(user(limiters[n % 2]) for n in range(12)))
        users_done.set()

    try:
        await asyncio.gather(sample_the_log(), users())
    finally:
        for client in clients:
            await client.aclose()
    assert len(admitted) == granted
    assert max_in_window(list(admitted.values())) <= 50
    # Pacing keeps the channel busy: close to 50/s over the run, not far below it.
    assert granted >= 0.9 * 50 * 2.5


async def test_unlimited_rate_never_waits_and_is_counted(redis_client: redis.Redis, keys: Keys) -> None:
    limiter = RateLimiter(redis_client, keys)
    waits = [await limiter.reserve("alipay", UNLIMITED) + await limiter.admit("alipay", UNLIMITED)
             for _ in range(200)]
    assert max(waits) == 0.0
    # Counted per Redis second: the last complete second holds what we just did, or the
    # current one does (read again once it is complete).
    seconds, _ = await redis_client.time()
    counted = 0
    for second in (seconds - 1, seconds):
        counted += int(await redis_client.get(f"{keys.rate_window('alipay')}:{second}") or 0)
    assert counted == 200


async def test_a_paused_rate_is_never_taken_for_unlimited(redis_client: redis.Redis, keys: Keys) -> None:
    limiter = RateLimiter(redis_client, keys)
    for paused in (PAUSED, ChannelRate(0.0)):
        with pytest.raises(ValueError, match="paused"):
            await limiter.reserve("alipay", paused)
        with pytest.raises(ValueError, match="paused"):
            await limiter.admit("alipay", paused)
    assert await redis_client.exists(keys.rate_window("alipay"), keys.rate_limit("alipay")) == 0


async def test_current_rate_reports_the_last_second(redis_client: redis.Redis, keys: Keys) -> None:
    limiter = RateLimiter(redis_client, keys)
    seconds, _ = await redis_client.time()
    await redis_client.set(f"{keys.rate_window('bank')}:{seconds - 1}", 37)
    assert await limiter.current_rate("bank") in (37.0, 0.0)  # 0.0 only if a second ticked meanwhile


async def test_admit_holds_calls_past_the_rate_in_any_second(redis_client: redis.Redis, keys: Keys) -> None:
    limiter = RateLimiter(redis_client, keys)
    waits = [await limiter.admit("bank", ChannelRate(5.0)) for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    # The sixth may go once the first call leaves the one-second window.
    assert all(0.9 < w <= 1.0 for w in waits[5:])
    assert await limiter.admit("bank", ChannelRate(5.9)) > 0  # a fractional rate rounds down


async def test_a_new_rate_starts_a_new_schedule(redis_client: redis.Redis, keys: Keys) -> None:
    limiter = RateLimiter(redis_client, keys)
    slow = [await limiter.reserve("bank", ChannelRate(1.0)) for _ in range(4)]
    assert slow[0] < 0.01 and 2.9 < slow[3] < 3.01
    # Raised: the next slot is now, not behind the slots cut for 1/s.
    first = await limiter.reserve("bank", ChannelRate(2.0))
    second = await limiter.reserve("bank", ChannelRate(2.0))
    assert first < 0.01 and 0.45 < second - first < 0.55


async def test_order_lock_is_exclusive_and_owned(redis_client: redis.Redis, keys: Keys) -> None:
    locks = OrderLocks(redis_client, keys, ttl_ms=500)
    token = await locks.acquire("o-1")
    assert token is not None
    assert await locks.acquire("o-1") is None
    assert not await locks.release("o-1", "not-the-owner")
    assert await locks.extend("o-1", token)
    assert 400 < await redis_client.pttl(keys.order_lock("o-1")) <= 500
    assert await locks.release("o-1", token)
    assert await locks.acquire("o-1") is not None
    # It expires on its own when its holder dies.
    expired = await locks.acquire("o-2")
    assert expired is not None
    await asyncio.sleep(0.6)  # the subject: the 500 ms lease runs out with nobody extending it
    assert await locks.acquire("o-2") is not None
    assert not await locks.extend("o-2", expired)


def job(order_id: str = "", attempt: int = 0) -> Job:
    return Job(order_id or f"o-{uuid.uuid4().hex[:8]}", 7, "bank", "m-1", 500, attempt)


async def publish(client: redis.Redis, keys: Keys, payout_job: Job) -> str:
    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    entry_id = await client.xadd(keys.payout_stream("bank"),
                                 {"job": encode_job(payout_job), "traceparent": traceparent})
    return entry_id.decode()


async def test_retry_copy_replaces_the_message_atomically(redis_client: redis.Redis, keys: Keys) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.ensure("bank")
    original = job()
    await publish(redis_client, keys, original)
    [delivery] = await queue.read("bank", 1, 100)
    assert delivery.job == original and delivery.traceparent.startswith("00-")
    await queue.retry(delivery, original.next_attempt("outcome unknown"))
    [copy] = await queue.read("bank", 1, 100)
    assert copy.job is not None and copy.job.attempt == 1 and copy.job.last_error == "outcome unknown"
    pending = await redis_client.xpending(keys.payout_stream("bank"), "payout")
    assert pending["pending"] == 1 and pending["min"].decode() == copy.entry_id


async def test_dead_letters_list_and_replay_once(redis_client: redis.Redis, keys: Keys) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.ensure("bank")
    failing = job(attempt=2)
    await publish(redis_client, keys, failing)
    [delivery] = await queue.read("bank", 1, 100)
    await queue.dead_letter(delivery, failing.next_attempt("gateway down"), "gateway down", 3)
    # The order is recorded as dead-lettered with the letter (withdraw_svc's sweep reads it).
    dead_orders = keys.payout_dead_orders("bank")
    assert await redis_client.hget(dead_orders, failing.order_id) == b"1"
    [letter] = await queue.dead_letters.read("bank", 10)
    assert (letter.reason, letter.attempts, letter.job.order_id) == ("gateway down", 3, failing.order_id)
    assert letter.dead_time is not None
    assert (await queue.group_info("bank")).pending == 0  # acked

    results = await asyncio.gather(queue.dead_letters.replay("bank", [letter.dead_letter_id]),
                                   queue.dead_letters.replay("bank", [letter.dead_letter_id]))
    assert sorted(results) == [0, 1]
    assert await queue.dead_letters.replay("bank", [letter.dead_letter_id]) == 0
    assert await queue.dead_letters.count("bank") == 0
    assert await redis_client.hexists(dead_orders, failing.order_id) == 0
    [again] = await queue.read("bank", 10, 100)
    assert again.job is not None and again.job.order_id == failing.order_id and again.job.attempt == 0
    assert again.traceparent.startswith("00-")


async def test_an_order_dead_twice_stays_recorded_until_both_letters_are_replayed(
    redis_client: redis.Redis, keys: Keys
) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.ensure("bank")
    failing = job(attempt=2)
    for _ in range(2):  # e.g. a duplicate message of the same order
        await publish(redis_client, keys, failing)
        [delivery] = await queue.read("bank", 1, 100)
        await queue.dead_letter(delivery, failing.next_attempt("gateway down"), "gateway down", 3)
    first, second = await queue.dead_letters.read("bank", 10)
    dead_orders = keys.payout_dead_orders("bank")
    assert await queue.dead_letters.replay("bank", [first.dead_letter_id]) == 1
    assert await redis_client.hget(dead_orders, failing.order_id) == b"1"
    assert await queue.dead_letters.replay("bank", [second.dead_letter_id]) == 1
    assert await redis_client.hexists(dead_orders, failing.order_id) == 0


async def test_dead_letters_page_oldest_first_after_the_token(redis_client: redis.Redis, keys: Keys) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.ensure("bank")
    jobs = [job(attempt=2) for _ in range(3)]
    for failing in jobs:
        await publish(redis_client, keys, failing)
        [delivery] = await queue.read("bank", 1, 100)
        await queue.dead_letter(delivery, failing.next_attempt("gateway down"), "gateway down", 3)
    # Only the dead letters and the channel list matter to listing; the other ports are not used.
    admin = PayoutAdmin(queue, queue.dead_letters, None, ChannelRates(None, ("bank",), {}),  # type: ignore[arg-type]
                        None)  # type: ignore[arg-type]
    first, token = await admin.list_dead_letters("bank", 2, "")
    assert [d.job.order_id for d in first] == [j.order_id for j in jobs[:2]]
    assert dead_letter_after(token) == first[-1].dead_letter_id  # the token stands for the last shown
    rest, last = await admin.list_dead_letters("bank", 2, token)
    assert [d.job.order_id for d in rest] == [jobs[2].order_id] and last == ""


async def test_idle_messages_of_a_dead_consumer_are_reclaimed(redis_client: redis.Redis, keys: Keys) -> None:
    dead = ChannelQueue(redis_client, keys, "payout", "dead-consumer")
    alive = ChannelQueue(redis_client, keys, "payout", "alive-consumer")
    await dead.ensure("bank")
    await publish(redis_client, keys, job())
    [held] = await dead.read("bank", 1, 100)
    assert await alive.autoclaim("bank", 200, 10) == []  # not idle long enough yet
    await asyncio.sleep(0.25)  # the subject: the message stays unacknowledged past the 200 ms idle time
    [taken] = await alive.autoclaim("bank", 200, 10)
    assert taken.entry_id == held.entry_id and taken.job == held.job
    # A live worker touching its message keeps it.
    await alive.touch(taken)
    assert await dead.autoclaim("bank", 200, 10) == []


async def test_group_is_recreated_after_a_wipe(redis_client: redis.Redis, keys: Keys) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.ensure("bank")
    await redis_client.delete(keys.payout_stream("bank"))
    assert await queue.read("bank", 1, 50) == []  # NOGROUP handled by recreating the group
    await publish(redis_client, keys, job("o-after-wipe"))
    [delivery] = await queue.read("bank", 1, 100)
    assert delivery.job is not None and delivery.job.order_id == "o-after-wipe"


async def test_stats_and_trim_keep_what_is_not_done(redis_client: redis.Redis, keys: Keys) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.ensure("bank")
    for _ in range(6):
        await publish(redis_client, keys, job())
    first, second, third = await queue.read("bank", 3, 100)
    await queue.ack(first)
    await queue.ack(third)
    group = await queue.group_info("bank")
    assert (group.backlog, group.pending, group.consumers) == (3, 1, 1)
    await queue.trim("bank")
    remaining = [e[0].decode() for e in await redis_client.xrange(keys.payout_stream("bank"))]
    assert second.entry_id in remaining and len(remaining) >= 4
    rest = await queue.read("bank", 10, 100)
    assert len(rest) == 3


async def test_trim_keeps_what_any_group_of_the_stream_still_needs(
    redis_client: redis.Redis, keys: Keys
) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    other = ChannelQueue(redis_client, keys, "another-reader", "r1")
    await queue.ensure("bank")
    await other.ensure("bank")
    ids = [await publish(redis_client, keys, job()) for _ in range(4)]
    for delivery in await queue.read("bank", 4, 100):
        await queue.ack(delivery)
    first, second, third = await other.read("bank", 3, 100)
    await other.ack(first)
    await other.ack(second)
    stream = keys.payout_stream("bank")
    await trim_acknowledged(redis_client, stream, exact=True)
    # Done by both groups: the first two; the other group still holds the third.
    assert [e[0].decode() for e in await redis_client.xrange(stream)] == ids[2:]
    await other.ack(third)
    await trim_acknowledged(redis_client, stream, exact=True)
    # The last entry the other group was given stays as its mark; the fourth is not yet its.
    assert [e[0].decode() for e in await redis_client.xrange(stream)] == ids[2:]
    [fourth] = await other.read("bank", 1, 100)
    await other.ack(fourth)
    await trim_acknowledged(redis_client, stream, exact=True)
    assert [e[0].decode() for e in await redis_client.xrange(stream)] == ids[3:]


async def test_awaiting_lease_hands_each_due_order_to_one_poller(
    redis_client: redis.Redis, keys: Keys
) -> None:
    queue = ChannelQueue(redis_client, keys, "payout", "c1")
    await queue.repark("bank", "o-due", 0)
    await queue.repark("bank", "o-later", int(time.time() * 1000) + 60_000)
    assert await queue.claim_due("bank", 5000, 10) == ["o-due"]
    assert await queue.claim_due("bank", 5000, 10) == []  # leased
    await queue.unpark("bank", "o-due")
    assert await redis_client.zcard(keys.payout_awaiting("bank")) == 1


def test_job_codec_round_trip() -> None:
    payout_job = Job("o-1", 9, "alipay", "m-9", 12345, 2, None, "boom")
    assert decode_job(encode_job(payout_job)) == payout_job
    assert decode_job(b"\xff\xff") is None
    assert decode_job(b"") is None


async def test_only_consumers_holding_nothing_are_forgotten(redis_client: redis.Redis, keys: Keys) -> None:
    idle = ChannelQueue(redis_client, keys, "payout", "idle-consumer")
    holder = ChannelQueue(redis_client, keys, "payout", "holding-consumer")
    me = ChannelQueue(redis_client, keys, "payout", "me")
    await me.ensure("bank")
    await publish(redis_client, keys, job())
    [done] = await idle.read("bank", 1, 100)
    await idle.ack(done)
    await publish(redis_client, keys, job())
    assert len(await holder.read("bank", 1, 100)) == 1
    await asyncio.sleep(0.05)  # the subject: both consumers go unseen for longer than the 10 ms idle_ms
    assert await me.reap_consumers("bank", 10) == 1
    consumers = await redis_client.xinfo_consumers(keys.payout_stream("bank"), "payout")
    names = {c["name"].decode() for c in consumers}
    assert names == {"holding-consumer"}
