"""Redis adapters of withdraw_svc: payout stream publishing, the Redis epoch, each channel's
data lineage, the order lock shared with payout_svc, and the short-lived cache of bound
methods."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as redis
from opentelemetry.trace import SpanKind
from redis.exceptions import ResponseError

from mesh.payout.v1 import payout_pb2
from meshkit.order_locks import OrderLocks
from meshkit.redis_keys import Keys
from meshkit.streams import context_of, stream_id_key, trace_fields
from meshkit.telemetry import TRACEPARENT, tracer
from meshkit.timeconv import to_ts
from withdraw_svc.peers import CachedMethods, Method
from withdraw_svc.records import InFlightJob, PayoutRow

_tracer = tracer("withdraw_svc.relay")

# The replication id of the master serving KEYS[1]'s slot (the script runs there). Redis
# draws a new one when it starts (empty: no persistence) and when a replica is promoted, so
# it changes whenever what the master holds may have lost writes it acknowledged.
_LINEAGE = """
local info = redis.call('INFO', 'replication')
return string.match(info, 'master_replid:(%w+)') or ''
"""

def payout_job(row: PayoutRow, now: datetime) -> bytes:
    p = row.payload
    return payout_pb2.PayoutJob(
        order_id=row.order_id, uid=int(p["uid"]), channel=str(p["channel"]),
        method_id=str(p["method_id"]), amount_fen=int(p["amount_fen"]), attempt=0,
        enqueue_time=to_ts(now),
    ).SerializeToString()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_position(groups: object, exists: object, group: str) -> tuple[int, int] | None:
    """The group's last delivered id; (0, 0) when the stream exists without the group
    (nothing consumed yet, so nothing is lost), or when Redis could not say; None when
    the stream is gone. XINFO GROUPS of a missing stream is an error: EXISTS tells."""
    if isinstance(groups, list):
        for g in groups:
            if _text(g.get("name")) == group:
                return stream_id_key(_text(g.get("last-delivered-id")))
    return None if exists == 0 else (0, 0)


@dataclass(frozen=True)
class Published:
    """Stream entry ids of the jobs published (in their order), and the lineage of each
    channel's master read in the same pipeline just before its entries were added."""

    ids: list[str]
    lineages: dict[str, str]


@dataclass(frozen=True)
class InRedis:
    """What waits in Redis on one PAYOUT job in flight. Anything at all means the job is
    not lost; nothing means it is (a wipe, a crash, a follow-up dropped)."""

    queued: bool      # its entry is still behind the consumer group's read position
    dead: bool        # in its channel's dead-letter stream: left for an operator or compensation
    awaiting: bool    # payout_svc follows the gateway's asynchronous answer
    locked: bool      # a worker (or the compensation job) holds the order right now

    @property
    def waiting(self) -> bool:
        return self.queued or self.dead or self.awaiting or self.locked


class RedisPort:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        # The compensation's lock on an order: its expiry is given per call (lock_order).
        self._locks = OrderLocks(client, keys, ttl_ms=0)

    # -- payout streams -------------------------------------------------------------------

    async def publish(self, rows: Sequence[PayoutRow]) -> Published:
        """XADD every job to its channel's stream in one pipelined round trip, after reading
        each channel's lineage (on a cluster, the pipeline sends a node's commands in order
        on one connection: the lineage is the one the entries went to, or an older one)."""
        now = datetime.now(UTC)
        channels = sorted({str(row.payload["channel"]) for row in rows})
        async with self.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.eval(_LINEAGE, 1, self.keys.payout_stream(channel))
            for row in rows:
                fields: dict[str, bytes | str] = {"job": payout_job(row, now)}
                # The relay runs outside the confirm's request: its PRODUCER span joins the
                # confirm's trace through the traceparent the outbox row kept, and the
                # consumer continues from this span.
                parent = context_of({TRACEPARENT: str(row.payload.get(TRACEPARENT, ""))})
                with _tracer.start_as_current_span(
                    "payout publish", context=parent, kind=SpanKind.PRODUCER,
                    attributes={"messaging.system": "redis", "payout.order_id": row.order_id},
                ):
                    fields.update(trace_fields())
                pipe.xadd(self.keys.payout_stream(str(row.payload["channel"])), fields)  # type: ignore[arg-type]
            replies = await pipe.execute()
        lineages = {ch: _text(r) for ch, r in zip(channels, replies[:len(channels)], strict=True)}
        return Published([_text(i) for i in replies[len(channels):]], lineages)

    async def lineages(self, channels: Sequence[str]) -> dict[str, str]:
        """The lineage of the master serving each channel's slot, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.eval(_LINEAGE, 1, self.keys.payout_stream(channel))
            replies = await pipe.execute()
        return {ch: _text(r) for ch, r in zip(channels, replies, strict=True)}

    async def still_held(self, jobs: Sequence[InFlightJob]) -> list[bool]:
        """After a channel's master changed lineage: whether each job is still held in
        Redis, in one round trip. Its own entry still in the stream (undelivered, pending or
        handled: a handled one left a trace of its own), a dead letter, an awaited payout, or
        a lock. The consumer group's read position is not asked: after a failover it may
        stand behind entries the new master never received."""
        async with self.client.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.xrange(self.keys.payout_stream(job.channel), job.stream_id or "0-1",
                            job.stream_id or "0-1", count=1)
                pipe.hexists(self.keys.payout_dead_orders(job.channel), job.order_id)
                pipe.zscore(self.keys.payout_awaiting(job.channel), job.order_id)
                pipe.exists(self.keys.order_lock(job.order_id))
            replies = await pipe.execute(raise_on_error=False)
        held = []
        for n, job in enumerate(jobs):
            entry, dead, awaiting, locked = replies[4 * n: 4 * n + 4]
            # An error counts as held: unsure, leave it (the sweep still looks later).
            held.append(any(isinstance(r, Exception) for r in (entry, dead, awaiting, locked))
                        or (bool(job.stream_id) and bool(entry)) or bool(dead)
                        or awaiting is not None or bool(locked))
        return held

    async def in_redis(self, jobs: Sequence[InFlightJob], group: str) -> list[InRedis]:
        """What waits on each job in Redis, read in one round trip: where the channel's
        consumer group reads, the channel's dead letters, payout_svc's awaiting set and the
        order locks."""
        channels = sorted({j.channel for j in jobs})
        async with self.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                stream = self.keys.payout_stream(channel)
                pipe.xinfo_groups(stream)
                pipe.exists(stream)
            for job in jobs:
                pipe.hexists(self.keys.payout_dead_orders(job.channel), job.order_id)
                pipe.zscore(self.keys.payout_awaiting(job.channel), job.order_id)
                pipe.exists(self.keys.order_lock(job.order_id))
            replies = await pipe.execute(raise_on_error=False)
        upto = {ch: _read_position(replies[2 * n], replies[2 * n + 1], group)
                for n, ch in enumerate(channels)}
        found = []
        for n, job in enumerate(jobs):
            # A reply that is an error counts as "something waits": unsure, leave it.
            dead, awaiting, locked = replies[2 * len(channels) + 3 * n: 2 * len(channels) + 3 * n + 3]
            read_upto = upto[job.channel]
            found.append(InRedis(
                queued=read_upto is not None and bool(job.stream_id)
                and stream_id_key(job.stream_id) > read_upto,
                dead=isinstance(dead, Exception) or bool(dead),
                awaiting=isinstance(awaiting, Exception) or awaiting is not None,
                locked=isinstance(locked, Exception) or bool(locked),
            ))
        return found

    async def stream_exists(self, channel: str) -> bool:
        return bool(await self.client.exists(self.keys.payout_stream(channel)))

    async def has_entry(self, channel: str, stream_id: str) -> bool:
        return bool(await self.client.xrange(self.keys.payout_stream(channel), stream_id, stream_id, count=1))

    async def last_delivered(self, channel: str, group: str) -> tuple[int, int] | None:
        """The consumer group's last delivered entry id; None when stream or group is missing."""
        try:
            groups = await self.client.xinfo_groups(self.keys.payout_stream(channel))
        except ResponseError:
            return None
        for g in groups:
            if _text(g.get("name")) == group:
                return stream_id_key(_text(g.get("last-delivered-id")))
        return None

    # -- epoch ----------------------------------------------------------------------------

    async def claim_epoch(self, token: str) -> str | None:
        """Create the epoch with `token` unless it exists; returns the epoch now stored
        (None if Redis lost it again at once). The caller won iff that is its token: SET
        NX's own reply cannot say, since a retry of a SET that did land (redis-py's after a
        broken connection, or the caller's after a timeout) finds the key its first try
        wrote and answers "not set"."""
        await self.client.set(self.keys.epoch(), token, nx=True)
        current = await self.client.get(self.keys.epoch())
        return _text(current) if current else None

    async def epoch(self) -> str | None:
        value = await self.client.get(self.keys.epoch())
        return _text(value) if value else None

    # -- order lock (same key and protocol as payout_svc) ---------------------------------

    async def lock_order(self, order_id: str, ttl_ms: int) -> str | None:
        return await self._locks.acquire(order_id, ttl_ms)

    async def unlock_order(self, order_id: str, token: str) -> None:
        await self._locks.release(order_id, token)

    # -- methods cache ----------------------------------------------------------------------

    def _methods_key(self, uid: int) -> str:
        return self.keys.bound_methods(uid)

    async def methods_with_version(self, uid: int) -> tuple[str, CachedMethods | None]:
        """uid's methods version now ("0": never bumped) and the cached list, in one MGET."""
        version, raw = await self.client.mget(self.keys.methods_version(uid), self._methods_key(uid))
        return (_text(version) if version is not None else "0"), _cached(raw)

    async def cache_methods(self, uid: int, methods: Sequence[Method], version: str, ttl_s: int) -> None:
        payload = json.dumps({"version": version, "methods": [
            {"method_id": m.method_id, "channel": m.channel, "display": m.display} for m in methods]})
        await self.client.set(self._methods_key(uid), payload, ex=max(1, ttl_s))


def _cached(raw: object) -> CachedMethods | None:
    if raw is None:
        return None
    value = json.loads(_text(raw))
    return CachedMethods(str(value["version"]), [
        Method(m["method_id"], m["channel"], m["display"]) for m in value["methods"]])
