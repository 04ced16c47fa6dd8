"""The channel streams of payout_svc: one stream and consumer group per channel, shared by
every worker and replica, and the awaiting set where asynchronously accepted payouts wait
for their next check. Dead letters: payout_svc.dead_letters; the entry format:
payout_svc.jobs."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from meshkit.redis_keys import Keys
from meshkit.streams import ensure_group, group_lag, recreating_group, text, trim_acknowledged
from payout_svc.dead_letters import DeadLetters
from payout_svc.domain import Delivery, GroupInfo, Job
from payout_svc.jobs import delivery_of, entry_fields

LAG_COUNT_LIMIT = 100_000

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


class ChannelQueue:
    def __init__(self, client: redis.Redis, keys: Keys, group: str, consumer: str,
                 reader: redis.Redis | None = None) -> None:
        self.redis = client
        # Blocking reads hold a connection each for up to the block time: they get a pool
        # of their own, sized for every worker, so they never starve the other commands.
        self.reader = reader or client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.dead_letters = DeadLetters(client, keys)
        self._due = client.register_script(_CLAIM_DUE)
        self._reap = client.register_script(_REAP_CONSUMER)

    def stream(self, channel: str) -> str:
        return self.keys.payout_stream(channel)

    async def ensure(self, channel: str) -> None:
        await ensure_group(self.redis, self.stream(channel), self.group)

    async def read(self, channel: str, count: int, block_ms: int | None) -> list[Delivery]:
        """Up to count new messages; block_ms None answers at once with what is there."""
        stream = self.stream(channel)
        reply: Any = await recreating_group(self.redis, stream, self.group, lambda: self.reader.xreadgroup(
            self.group, self.consumer, {stream: ">"}, count=count, block=block_ms), None)
        return [delivery_of(channel, entry_id, fields)
                for _, entries in reply or [] for entry_id, fields in entries]

    async def autoclaim(self, channel: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over messages a consumer has held longer than min_idle_ms (it crashed, or is stuck)."""
        stream = self.stream(channel)
        reply: Any = await recreating_group(self.redis, stream, self.group, lambda: self.redis.xautoclaim(
            stream, self.group, self.consumer, min_idle_ms, "0-0", count=count), None)
        return [delivery_of(channel, entry_id, fields) for entry_id, fields in (reply[1] if reply else [])]

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
            pipe.xadd(stream, entry_fields(job))
            pipe.xack(stream, self.group, delivery.entry_id)
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, job: Job | None, reason: str, attempts: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            self.dead_letters.bury(pipe, delivery, job, reason, attempts)
            pipe.xack(self.stream(delivery.channel), self.group, delivery.entry_id)
            await pipe.execute()

    async def park(self, delivery: Delivery, order_id: str, due_ms: int) -> None:
        """Hand an asynchronously accepted payout to the awaiting poller and ack the message."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.payout_awaiting(delivery.channel), {order_id: due_ms})
            pipe.xack(self.stream(delivery.channel), self.group, delivery.entry_id)
            await pipe.execute()

    async def trim(self, channel: str) -> None:
        """Drop acknowledged entries; undelivered and pending ones stay."""
        await trim_acknowledged(self.redis, self.stream(channel))

    async def reap_consumers(self, channel: str, idle_ms: int) -> int:
        """Forget consumers that hold nothing and have not been seen for idle_ms (crashed)."""
        try:
            consumers = await self.redis.xinfo_consumers(self.stream(channel), self.group)
        except ResponseError:
            return 0
        reaped = 0
        for consumer in consumers:
            name = text(consumer["name"])
            if consumer["pending"] == 0 and consumer["idle"] > idle_ms and name != self.consumer:
                reaped += int(await self._reap(keys=[self.stream(channel)], args=[self.group, name]))
        return reaped

    # -- awaiting asynchronous payouts ----------------------------------------------------

    async def claim_due(self, channel: str, lease_ms: int, limit: int) -> list[str]:
        """Orders whose next check is due; each is pushed lease_ms ahead so that one poller
        (of any replica) checks it, and it comes due again if that poller dies."""
        now = int(time.time() * 1000)
        due = await self._due(keys=[self.keys.payout_awaiting(channel)], args=[now, now + lease_ms, limit])
        return [text(member) for member in due]

    async def repark(self, channel: str, order_id: str, due_ms: int) -> None:
        await self.redis.zadd(self.keys.payout_awaiting(channel), {order_id: due_ms})

    async def unpark(self, channel: str, order_id: str) -> None:
        await self.redis.zrem(self.keys.payout_awaiting(channel), order_id)

    async def requeue_awaiting(self, channel: str, order_id: str, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream(channel), entry_fields(job))
            pipe.zrem(self.keys.payout_awaiting(channel), order_id)
            await pipe.execute()

    # -- operators ---------------------------------------------------------------------------

    async def group_info(self, channel: str) -> GroupInfo:
        stream = self.stream(channel)
        length = int(await self.redis.xlen(stream))
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return GroupInfo(length, 0, 0)
        ours = next((g for g in groups if text(g["name"]) == self.group), None)
        if ours is None:
            return GroupInfo(length, 0, 0)
        lag = await group_lag(self.redis, stream, ours, LAG_COUNT_LIMIT)
        return GroupInfo(lag, int(ours["pending"]), int(ours["consumers"]))
