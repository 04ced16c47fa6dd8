"""Redis adapters of payout_svc: the channel streams and their dead letters, the awaiting
set of asynchronous payouts, the shared rate limiter and the order locks."""

from __future__ import annotations

import logging
import math
import secrets
import time
from datetime import datetime
from typing import Any

import redis.asyncio as redis
from google.protobuf.message import DecodeError
from redis.exceptions import ResponseError

from mesh.payout.v1 import payout_pb2
from meshkit.redis_keys import Keys
from meshkit.streams import ensure_group, group_lag, is_nogroup, trace_fields
from meshkit.timeconv import from_ts, to_ts, utcnow
from payout_svc.domain import ChannelRate, DeadLetter, Delivery, Job

log = logging.getLogger(__name__)

JOB = "job"
TRACEPARENT = "traceparent"
LAG_COUNT_LIMIT = 100_000


def encode_job(job: Job) -> bytes:
    return payout_pb2.PayoutJob(
        order_id=job.order_id, uid=job.uid, channel=job.channel, method_id=job.method_id,
        amount_fen=job.amount_fen, attempt=job.attempt, enqueue_time=to_ts(job.enqueue_time),
        last_error=job.last_error,
    ).SerializeToString()


def decode_job(raw: bytes) -> Job | None:
    try:
        pb = payout_pb2.PayoutJob.FromString(raw)
    except DecodeError:
        return None
    if not pb.order_id:
        return None
    return Job(pb.order_id, pb.uid, pb.channel, pb.method_id, pb.amount_fen, pb.attempt,
               from_ts(pb.enqueue_time), pb.last_error)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _delivery(channel: str, entry_id: Any, fields: dict[Any, Any]) -> Delivery:
    raw = fields.get(b"job", b"")
    return Delivery(channel, _text(entry_id), decode_job(raw), raw, _text(fields.get(b"traceparent", b"")))


def _entry_fields(job: Job) -> dict[Any, Any]:
    """A stream entry for a job, carrying the trace context of the code that queues it."""
    return {JOB: encode_job(job), **trace_fields()}


class ChannelQueue:
    """One stream and consumer group per channel, shared by every worker and replica."""

    def __init__(self, client: redis.Redis, keys: Keys, group: str, consumer: str,
                 reader: redis.Redis | None = None) -> None:
        self.redis = client
        # Blocking reads hold a connection each for up to the block time: they get a pool
        # of their own, sized for every worker, so they never starve the other commands.
        self.reader = reader or client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self._due = self.redis.register_script(_CLAIM_DUE)
        self._reap = self.redis.register_script(_REAP_CONSUMER)
        self._replay = self.redis.register_script(_REPLAY)

    def stream(self, channel: str) -> str:
        return self.keys.payout_stream(channel)

    async def ensure(self, channel: str) -> None:
        await ensure_group(self.redis, self.stream(channel), self.group)

    async def read(self, channel: str, count: int, block_ms: int | None) -> list[Delivery]:
        """Up to count new messages; block_ms None answers at once with what is there."""
        stream = self.stream(channel)
        try:
            reply: Any = await self.reader.xreadgroup(self.group, self.consumer, {stream: ">"},
                                                     count=count, block=block_ms)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            # Redis restarted empty: recreate the group; withdraw_svc republishes what was lost.
            log.warning("consumer group of %s missing; recreating it", stream)
            await self.ensure(channel)
            return []
        return [_delivery(channel, entry_id, fields)
                for _, entries in reply or [] for entry_id, fields in entries]

    async def autoclaim(self, channel: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over messages a consumer has held longer than min_idle_ms (it crashed, or is stuck)."""
        try:
            reply: Any = await self.redis.xautoclaim(self.stream(channel), self.group, self.consumer,
                                                min_idle_ms, "0-0", count=count)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            await self.ensure(channel)
            return []
        return [_delivery(channel, entry_id, fields) for entry_id, fields in reply[1]]

    async def touch(self, delivery: Delivery) -> None:
        """Reset the idle time of a message still being worked on, so it is not reclaimed."""
        await self.redis.xclaim(self.stream(delivery.channel), self.group, self.consumer, 0,
                                [delivery.entry_id], justid=True)

    async def ack(self, delivery: Delivery) -> None:
        await self.redis.xack(self.stream(delivery.channel), self.group, delivery.entry_id)

    async def ack_many(self, channel: str, deliveries: list[Delivery]) -> None:
        """One XACK for messages of one channel."""
        if deliveries:
            await self.redis.xack(self.stream(channel), self.group, *(d.entry_id for d in deliveries))

    async def touch_many(self, channel: str, deliveries: list[Delivery]) -> None:
        """touch() for messages of one channel, in one XCLAIM."""
        if deliveries:
            await self.redis.xclaim(self.stream(channel), self.group, self.consumer, 0,
                                    [d.entry_id for d in deliveries], justid=True)

    async def retry(self, delivery: Delivery, job: Job) -> None:
        """Replace the message by a copy carrying the next attempt number, atomically: a
        crash leaves either the original (redelivered) or the copy, never both or neither."""
        stream = self.stream(delivery.channel)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, _entry_fields(job))
            pipe.xack(stream, self.group, delivery.entry_id)
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, job: Job | None, reason: str, attempts: int) -> None:
        stream = self.stream(delivery.channel)
        fields: dict[Any, Any] = {
            JOB: encode_job(job) if job is not None else delivery.raw_job,
            "reason": reason[:1000], "attempts": str(attempts), "dead_time": utcnow().isoformat(),
            "source_id": delivery.entry_id,
        }
        if delivery.traceparent:
            fields[TRACEPARENT] = delivery.traceparent
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.payout_dead_letters(delivery.channel), fields)
            if job is not None:
                # withdraw_svc's sweep asks here, so it never puts a dead letter back on
                # the stream behind the operator's back (at most max_attempts, then here).
                pipe.hincrby(self.keys.payout_dead_orders(delivery.channel), job.order_id, 1)
            pipe.xack(stream, self.group, delivery.entry_id)
            await pipe.execute()

    async def park(self, delivery: Delivery, order_id: str, due_ms: int) -> None:
        """Hand an asynchronously accepted payout to the awaiting poller and ack the message."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.payout_awaiting(delivery.channel), {order_id: due_ms})
            pipe.xack(self.stream(delivery.channel), self.group, delivery.entry_id)
            await pipe.execute()

    async def trim(self, channel: str) -> None:
        """Drop acknowledged entries: everything older than both the oldest pending entry
        and the group's last delivered entry. Undelivered and pending entries stay."""
        stream = self.stream(channel)
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return
        ours = [g for g in groups if _text(g["name"]) == self.group]
        if len(groups) != 1 or not ours:
            return  # someone else reads this stream too: keep everything
        floor = _text(ours[0]["last-delivered-id"])
        pending = await self.redis.xpending(stream, self.group)
        if pending["pending"]:
            floor = min(floor, _text(pending["min"]), key=_id_key)
        if floor != "0-0":
            await self.redis.xtrim(stream, minid=floor, approximate=True)

    async def reap_consumers(self, channel: str, idle_ms: int) -> int:
        """Forget consumers that hold nothing and have not been seen for idle_ms (crashed)."""
        try:
            consumers = await self.redis.xinfo_consumers(self.stream(channel), self.group)
        except ResponseError:
            return 0
        reaped = 0
        for consumer in consumers:
            name = _text(consumer["name"])
            if consumer["pending"] == 0 and consumer["idle"] > idle_ms and name != self.consumer:
                reaped += int(await self._reap(keys=[self.stream(channel)], args=[self.group, name]))
        return reaped

    # -- awaiting asynchronous payouts ----------------------------------------------------

    async def claim_due(self, channel: str, lease_ms: int, limit: int) -> list[str]:
        """Orders whose next check is due; each is pushed lease_ms ahead so that one poller
        (of any replica) checks it, and it comes due again if that poller dies."""
        now = int(time.time() * 1000)
        due = await self._due(keys=[self.keys.payout_awaiting(channel)], args=[now, now + lease_ms, limit])
        return [_text(member) for member in due]

    async def repark(self, channel: str, order_id: str, due_ms: int) -> None:
        await self.redis.zadd(self.keys.payout_awaiting(channel), {order_id: due_ms})

    async def unpark(self, channel: str, order_id: str) -> None:
        await self.redis.zrem(self.keys.payout_awaiting(channel), order_id)

    async def requeue_awaiting(self, channel: str, order_id: str, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream(channel), _entry_fields(job))
            pipe.zrem(self.keys.payout_awaiting(channel), order_id)
            await pipe.execute()

    # -- operators ---------------------------------------------------------------------------

    async def group_info(self, channel: str) -> tuple[int, int, int]:
        """(backlog, pending, consumers) of the channel's group."""
        stream = self.stream(channel)
        length = int(await self.redis.xlen(stream))
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return length, 0, 0
        ours = next((g for g in groups if _text(g["name"]) == self.group), None)
        if ours is None:
            return length, 0, 0
        lag = await group_lag(self.redis, stream, ours, LAG_COUNT_LIMIT)
        return lag, int(ours["pending"]), int(ours["consumers"])

    async def dead_letter_count(self, channel: str) -> int:
        return int(await self.redis.xlen(self.keys.payout_dead_letters(channel)))

    async def list_dead_letters(self, channel: str, limit: int, after: str | None = None) -> list[DeadLetter]:
        # "(" makes the start exclusive: the page begins after the last letter shown.
        entries: Any = await self.redis.xrange(self.keys.payout_dead_letters(channel),
                                               min=f"({after}" if after else "-", count=limit)
        return [_dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def replay(self, channel: str, ids: list[str]) -> int:
        """Put dead letters back on the stream with attempt 0. The script publishes a letter
        only if it also deletes it, so a letter replayed twice (or by two operators at once)
        goes back once."""
        dlq = self.keys.payout_dead_letters(channel)
        if not ids:
            everything: Any = await self.redis.xrange(dlq)
            ids = [_text(entry_id) for entry_id, _ in everything]
        replayed = 0
        for entry_id in ids:
            entries: Any = await self.redis.xrange(dlq, min=entry_id, max=entry_id)
            if not entries:
                continue
            fields = entries[0][1]
            job = decode_job(fields.get(b"job", b""))
            if job is None:
                log.warning("dead letter %s on %s has no readable job; left in place", entry_id, channel)
                continue
            fresh = Job(job.order_id, job.uid, job.channel, job.method_id, job.amount_fen, 0,
                        job.enqueue_time, f"replayed after: {job.last_error}"[:500])
            trace = fields.get(b"traceparent", b"")
            replayed += int(await self._replay(
                keys=[dlq, self.stream(channel), self.keys.payout_dead_orders(channel)],
                args=[entry_id, encode_job(fresh), trace, job.order_id]))
        return replayed


def _dead_letter(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
    job = decode_job(fields.get(b"job", b"")) or Job("", 0, "", "", 0)
    dead_time = None
    if raw := fields.get(b"dead_time"):
        try:
            dead_time = datetime.fromisoformat(_text(raw))
        except ValueError:
            dead_time = None
    return DeadLetter(_text(entry_id), job, _text(fields.get(b"reason", b"")),
                      int(fields.get(b"attempts", b"0") or 0), dead_time)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class OrderLocks:
    """A lock per order id with an owner token and expiry, released only by its owner.
    A convenience that keeps two workers off one order; the guarantees are withdraw_svc's
    compare-and-set and the gateway's idempotency."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_ms: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_ms = ttl_ms
        self._release = self.redis.register_script(_RELEASE)
        self._extend = self.redis.register_script(_EXTEND)

    async def acquire(self, order_id: str) -> str | None:
        token = secrets.token_hex(12)
        ok = await self.redis.set(self.keys.order_lock(order_id), token, nx=True, px=self.ttl_ms)
        return token if ok else None

    async def release(self, order_id: str, token: str) -> bool:
        return bool(await self._release(keys=[self.keys.order_lock(order_id)], args=[token]))

    async def acquire_many(self, order_ids: list[str]) -> dict[str, str]:
        """acquire() for many orders in one round trip: the tokens of the locks taken."""
        tokens = [secrets.token_hex(12) for _ in order_ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id, token in zip(order_ids, tokens, strict=True):
                pipe.set(self.keys.order_lock(order_id), token, nx=True, px=self.ttl_ms)
            taken = await pipe.execute()
        return {o: t for o, t, ok in zip(order_ids, tokens, taken, strict=True) if ok}

    async def release_many(self, held: dict[str, str]) -> None:
        await self._each(self._release, held, [])

    async def extend_many(self, held: dict[str, str]) -> None:
        await self._each(self._extend, held, [self.ttl_ms])

    async def _each(self, script: Any, held: dict[str, str], extra: list[Any]) -> None:
        if not held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id, token in held.items():
                await script(keys=[self.keys.order_lock(order_id)], args=[token, *extra], client=pipe)
            await pipe.execute()

    async def extend(self, order_id: str, token: str) -> bool:
        return bool(await self._extend(keys=[self.keys.order_lock(order_id)], args=[token, self.ttl_ms]))


class RateLimiter:
    """Per-channel limiter shared by every replica, in two Lua scripts on Redis time.

    reserve: GCRA. Each call reserves the next free slot of the channel (slots 1/rate
    apart) and is told how long to wait for it. Reserving instead of "retry when allowed"
    keeps the channel busy at its rate: a worker that wakes a little late does not push
    the schedule back, and waiters never race for one slot.

    admit: at the moment of the call, a sliding log of the calls of the last second.
    Slots are 1/rate apart but workers wake with jitter (a busy event loop, a busy host),
    so a late call and an on-time one can bunch up; the log refuses a call while the last
    second already holds `rate` of them, which makes "at most rate calls in any one-second
    window" hold for the calls themselves, not only for their slots.

    A margin lengthens that window a little (1 s + margin): a call admitted here still
    travels to the gateway, and on a loaded host some take tens of milliseconds longer
    than others; the margin keeps the gateway's own count at or under the rate even then,
    for a throughput cost of margin / (1 s + margin).

    An unlimited rate (said explicitly; see ChannelRate) never waits, and its calls are
    still counted for the stats. A paused rate is never passed here: a paused channel makes
    no calls at all, so asking is a bug, refused loudly."""

    def __init__(self, client: redis.Redis, keys: Keys, margin_ms: int = 0) -> None:
        self.redis = client
        self.keys = keys
        self.window_us = 1_000_000 + 1000 * max(0, margin_ms)
        self._reserve = self.redis.register_script(_GCRA_RESERVE)
        self._admit = self.redis.register_script(_ADMIT)
        self._take = self.redis.register_script(_TAKE)

    async def reserve(self, channel: str, rate: ChannelRate) -> float:
        """Seconds to wait for this call's slot."""
        if rate.unlimited:
            return 0.0
        wait_us = await self._reserve(keys=[self.keys.rate_limit(channel)],
                                      args=[repr(float(limited(rate)))])
        return max(0, int(wait_us)) / 1_000_000

    async def admit(self, channel: str, rate: ChannelRate) -> float:
        """0 when the call may start now (it is then counted); else seconds to wait."""
        limit = "unlimited" if rate.unlimited else window_limit(limited(rate))
        wait_us = await self._admit(keys=[self.keys.rate_window(channel)],
                                    args=[limit, secrets.token_hex(6), self.window_us])
        return max(0, int(wait_us)) / 1_000_000

    async def take(self, channel: str, rate: ChannelRate, wanted: int) -> tuple[int, float]:
        """Up to `wanted` gateway calls that may start now, in one script: (granted, seconds
        to wait before asking for the rest). Granted calls are counted at once."""
        if rate.unlimited:
            limit, per_second = "unlimited", "0"
        else:
            limit, per_second = str(window_limit(limited(rate))), repr(float(limited(rate)))
        granted, wait_us = await self._take(
            keys=[self.keys.rate_limit(channel), self.keys.rate_window(channel)],
            args=[per_second, limit, wanted, self.window_us, secrets.token_hex(6), TAKE_BURST_US])
        return int(granted), max(0, int(wait_us)) / 1_000_000

    async def current_rate(self, channel: str) -> float:
        """Gateway calls counted in the last complete second (Redis time), all replicas."""
        seconds, _micros = await self.redis.time()
        raw = await self.redis.get(f"{self.keys.rate_window(channel)}:{int(seconds) - 1}")
        return float(int(raw)) if raw else 0.0


# How far ahead of its schedule a take may grant calls. Calls granted together reach the
# gateway together, so a late batch shifts all of them at once: bursts are kept to what
# the rate allows in this long (one call at low rates), and the window's margin still
# absorbs the jitter as it did for single calls.
TAKE_BURST_US = 10_000


def limited(rate: ChannelRate) -> float:
    if rate.paused:
        raise ValueError("a paused channel makes no gateway calls: nothing to rate-limit")
    return rate.per_second


def window_limit(per_second: float) -> int:
    """Calls allowed in any one-second window: the rate, rounded down (at least one)."""
    return max(1, math.floor(per_second + 1e-9))


# KEYS[1] schedule (hash: tat, rate); ARGV[1] rate per second. Microseconds of Redis's
# clock, so every replica shares one schedule. A new rate starts a new schedule: slots
# cut for the old one do not hold the new one back (the sliding log still caps any
# second at the new rate).
_GCRA_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'tat', 'rate')
local tat = 0
if state[2] == ARGV[1] then tat = tonumber(state[1] or '0') end
local slot = now
if tat > now then slot = tat end
local next_tat = slot + interval
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', next_tat), 'rate', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor((next_tat - now) / 1000) + 1000)
return math.floor(slot - now)
"""

# KEYS[1] sliding log (zset of call times); ARGV[1] calls allowed per window (a number
# >= 1, or "unlimited"), ARGV[2] a unique member, ARGV[3] window in microseconds. Counts
# admitted calls per second in KEYS[1]:<second>.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[3])
if ARGV[1] ~= 'unlimited' then
  local limit = tonumber(ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return math.max(1, math.floor(tonumber(oldest[2]) + window - now) + 1)
  end
  redis.call('ZADD', KEYS[1], now, string.format('%.0f', now) .. ':' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) + 1000)
end
local counter = KEYS[1] .. ':' .. t[1]
redis.call('INCR', counter)
redis.call('EXPIRE', counter, 10)
return 0
"""

# take: reserve and admit for up to ARGV[3] calls at once. KEYS[1] GCRA schedule, KEYS[2]
# sliding log (as above); ARGV: rate per second ("0" when unlimited), calls per window (or
# "unlimited"), calls wanted, window in microseconds, a unique member prefix, burst in
# microseconds. The schedule grants the slots due within the burst of now (GCRA with that
# tolerance: at 2000/s a 10 ms burst is 20 calls at once, at 50/s one), so grants stay as
# smooth as single calls wherever a rate binds; the log then caps the grant so that no
# window holds more than its calls. Returns {granted, microseconds to wait for the rest}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = tonumber(ARGV[3])
local granted = wanted
local wait = 0
if ARGV[2] ~= 'unlimited' then
  local interval = 1000000 / tonumber(ARGV[1])
  local window = tonumber(ARGV[4])
  local limit = tonumber(ARGV[2])
  local state = redis.call('HMGET', KEYS[1], 'tat', 'rate')
  local tat = now
  if state[2] == ARGV[1] then tat = math.max(now, tonumber(state[1] or '0')) end
  local burst = tonumber(ARGV[6])
  if tat > now + burst then
    granted = 0
  else
    granted = math.min(wanted, math.floor((now + burst - tat) / interval) + 1)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  local free = limit - redis.call('ZCARD', KEYS[2])
  if granted > free then granted = math.max(0, free) end
  for i = 1, granted do
    redis.call('ZADD', KEYS[2], now, string.format('%.0f', now) .. ':' .. ARGV[5] .. ':' .. i)
  end
  if granted > 0 then
    tat = tat + granted * interval
    redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat), 'rate', ARGV[1])
    redis.call('PEXPIRE', KEYS[1], math.floor((tat - now) / 1000) + 1000)
    redis.call('PEXPIRE', KEYS[2], math.floor(window / 1000) + 1000)
  end
  if granted < wanted then
    wait = math.max(1, math.floor(tat - burst - now))
    if redis.call('ZCARD', KEYS[2]) >= limit then
      local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      wait = math.max(wait, math.floor(tonumber(oldest[2]) + window - now) + 1)
    end
  end
end
if granted > 0 then
  local counter = KEYS[2] .. ':' .. t[1]
  redis.call('INCRBY', counter, granted)
  redis.call('EXPIRE', counter, 10)
end
return {granted, wait}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] awaiting zset; ARGV: now ms, lease-until ms, limit.
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member) end
return due
"""

# KEYS[1] stream; ARGV: group, consumer. Deleting a consumer drops its pending entries, so
# it is deleted only if it holds none at that very moment.
_REAP_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] dead-letter stream, KEYS[2] channel stream, KEYS[3] dead orders (hash: order id
# -> dead letters); ARGV: entry id, job bytes, traceparent, order id.
_REPLAY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[4], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[4]) end
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[2], 'traceparent', ARGV[3])
else
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
end
return 1
"""
