"""payout_svc's per-channel rate limiter, shared by every replica: Lua scripts on Redis's
clock (GCRA reservations, a sliding log of the last second's calls, and both at once for
a batch)."""

from __future__ import annotations

import math
import secrets

import redis.asyncio as redis

from meshkit.redis_keys import Keys
from payout_svc.domain import ChannelRate


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

# The lineage fence, in both scripts that cap calls (admit, take). Redis Cluster acknowledges
# a write before its replica has it: a master that dies may take the last second's sliding
# log with it, and the replica promoted in its place would grant that second's calls again.
# Each script compares the master's replication id (a promoted replica draws a new one) with
# the one it stored beside the log; when a known one has changed, it grants nothing for one
# window, which is as long as the lost calls could still count. A missing record (first use,
# or a wipe: the log is gone as well) sets it without waiting, as before the fence.
_FENCE = """
local fence = KEYS[{log}] .. ':lineage'
local lineage = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
local seen = redis.call('HMGET', fence, 'replid', 'until')
local fenced = tonumber(seen[2] or '0')
if seen[1] ~= lineage then
  fenced = 0
  if seen[1] then fenced = now + window end
  redis.call('HSET', fence, 'replid', lineage, 'until', string.format('%.0f', fenced))
  redis.call('EXPIRE', fence, 86400)
end
"""

# KEYS[1] sliding log (zset of call times); ARGV[1] calls allowed per window (a number
# >= 1, or "unlimited"), ARGV[2] a unique member, ARGV[3] window in microseconds. Counts
# admitted calls per second in KEYS[1]:<second>.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[3])
if ARGV[1] ~= 'unlimited' then
""" + _FENCE.format(log=1) + """
  if fenced > now then return math.floor(fenced - now) + 1 end
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
""" + _FENCE.format(log=2) + """
  if fenced > now then return {0, math.floor(fenced - now) + 1} end
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
