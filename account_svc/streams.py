"""The reward ingest stream as account_svc consumes it: P partitions (campaign.partitions),
each with one consumer group shared by every consumer of every replica, a pending list per
consumer, and a side stream per partition for tokens that were refused.

Every consumer reads all partitions in one XREADGROUP; Redis hands each entry to one
consumer of the group, so consumers need no assignment among themselves, and any of them
takes over what a dead one left pending (XAUTOCLAIM). The stream of before partitioning
(`Keys.rewards_ingest`) is read as one more partition while it holds anything undelivered
or pending, and looked at again now and then in case an old producer still writes to it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from campaign.partitions import DEFAULT_PARTITIONS, checked_partitions
from meshkit.redis_client import is_cluster
from meshkit.redis_keys import Keys
from meshkit.streams import ensure_group, group_lag, is_nogroup, text, trim_acknowledged

log = logging.getLogger(__name__)

GROUP = "account-credit"
# One token per entry, or several newline-separated (see campaign/publish.py).
TOKEN_FIELD = b"token"
TOKENS_FIELD = b"tokens"
# Refused tokens are kept for inspection, not forever.
REJECTED_MAXLEN = 100_000
# How often a consumer looks whether the pre-partitioning stream holds new entries again
# (an old producer during a rolling upgrade): one XINFO a few seconds apart.
LEGACY_CHECK_S = 5.0
# Longest block of one read on a Redis Cluster (_read_each).
CLUSTER_BLOCK_MS = 100


@dataclass(frozen=True)
class Partition:
    """One ingest stream and where refusals of its entries go (the same Cluster slot)."""

    stream: str
    rejected: str


@dataclass(frozen=True)
class Message:
    id: str
    fields: dict[bytes, bytes]
    # The stream it was read from: it is acknowledged there.
    stream: str

    @property
    def tokens(self) -> list[str]:
        packed = self.fields.get(TOKENS_FIELD)
        if packed is not None:
            return packed.decode(errors="replace").split("\n")
        return [self.fields.get(TOKEN_FIELD, b"").decode(errors="replace")]


@dataclass(frozen=True)
class Rejection:
    message: Message
    token: str
    reason: str
    detail: str


def _messages(entries: list[tuple[bytes, dict[bytes, bytes]]] | None, stream: str) -> list[Message]:
    out: list[Message] = []
    for entry_id, fields in entries or []:
        # XAUTOCLAIM reports entries trimmed meanwhile with no fields.
        if fields is None:
            continue
        out.append(Message(text(entry_id), fields, stream))
    return out


def partitions_of(keys: Keys, partitions: int) -> list[Partition]:
    return [Partition(keys.credit_stream(n), keys.credit_rejected(n))
            for n in range(checked_partitions(partitions, "partitions"))]


def legacy_of(keys: Keys) -> Partition:
    return Partition(keys.rewards_ingest(), keys.rewards_rejected())


class IngestStream:
    """What one consumer reads: every partition, and the old single stream while it is not
    drained."""

    def __init__(self, client: redis.Redis, keys: Keys, consumer: str, *,
                 partitions: int = DEFAULT_PARTITIONS, legacy_check_s: float = LEGACY_CHECK_S) -> None:
        self.client = client
        self.consumer = consumer
        self.partitions = partitions_of(keys, partitions)
        self.legacy = legacy_of(keys)
        self.legacy_active = False
        self._by_stream = {p.stream: p for p in [*self.partitions, self.legacy]}
        self._legacy_check_s = legacy_check_s
        self._next_legacy_check = 0.0
        # XAUTOCLAIM scans each pending list a page at a time: the cursor of every stream
        # not yet scanned to its end in this round, so stale entries behind live ones are
        # reached too. Empty: the round is over.
        self._claiming: dict[str, str] = {}

    @property
    def streams(self) -> list[Partition]:
        return [*self.partitions, self.legacy] if self.legacy_active else self.partitions

    async def ensure(self) -> None:
        for partition in self.partitions:
            await ensure_group(self.client, partition.stream, GROUP)
        await self.check_legacy()

    async def check_legacy(self) -> bool:
        """Whether the pre-partitioning stream holds entries this group has not delivered
        or not acknowledged; it is read (and claimed from) only while it does. Never
        created here: a deployment that never had it has nothing to drain."""
        self._next_legacy_check = time.monotonic() + self._legacy_check_s
        stream = self.legacy.stream
        try:
            groups: Any = await self.client.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            self.legacy_active = False
            return False
        group = next((g for g in groups if text(g["name"]) == GROUP), None)
        if group is None:
            # Published to by a producer whose consumers never made the group: from id 0,
            # everything in it is still to be delivered.
            await ensure_group(self.client, stream, GROUP)
            active = bool(await self.client.xlen(stream))
        else:
            last = text(group["last-delivered-id"])
            undelivered: Any = await self.client.xrange(stream, min="(" + last, count=1)
            active = bool(group["pending"]) or bool(undelivered)
        if active != self.legacy_active:
            log.info("pre-partitioning ingest stream %s: %s", stream,
                     "entries to drain" if active else "drained")
        self.legacy_active = active
        return active

    async def read(self, count: int, block_ms: int, *, own_pending: bool = False) -> list[Message]:
        """New messages, up to `count` of each partition (or, with own_pending, this
        consumer's unacknowledged ones), in one XREADGROUP; grouped by stream."""
        if time.monotonic() >= self._next_legacy_check:
            await self.check_legacy()
        streams: dict[Any, Any] = {p.stream: "0" if own_pending else ">" for p in self.streams}
        block = None if own_pending else block_ms
        try:
            if is_cluster(self.client) and len(streams) > 1:
                reply: Any = await self._read_each(streams, count, block)
            else:
                reply = await self.client.xreadgroup(GROUP, self.consumer, streams, count=count, block=block)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            # Redis restarted empty (or a stream was deleted): recreate and carry on.
            log.warning("consumer group %s missing on an ingest stream; recreating it", GROUP)
            await self.ensure()
            return []
        out: list[Message] = []
        for stream, entries in (reply.items() if isinstance(reply, dict) else reply or []):
            out += _messages(entries, text(stream))
        return out

    async def _read_each(self, streams: dict[Any, Any], count: int, block_ms: int | None) -> list[Any]:
        """The read on a Redis Cluster, where one command may not span slots: one XREADGROUP
        per partition, at once. First without blocking; only when every partition is empty,
        blocking, for at most CLUSTER_BLOCK_MS (the reads answer together, so a long block on
        an idle partition would hold back what a busy one returned)."""
        async def each(block: int | None) -> list[Any]:
            replies = await asyncio.gather(*(
                self.client.xreadgroup(GROUP, self.consumer, {stream: at}, count=count, block=block)
                for stream, at in streams.items()))
            pairs: list[Any] = []
            for reply in replies:
                pairs += list(reply.items()) if isinstance(reply, dict) else list(reply or [])
            return pairs
        found = await each(None)
        if found or block_ms is None:
            return found
        return await each(min(block_ms, CLUSTER_BLOCK_MS))

    async def claim_stale(self, min_idle_ms: int, count: int) -> list[Message]:
        """Take over messages that another (dead) consumer read and never acknowledged:
        one XAUTOCLAIM page of every stream whose scan this round has not finished."""
        if not self._claiming:
            self._claiming = {p.stream: "0-0" for p in self.streams}
        each = max(1, count // len(self._claiming))
        out: list[Message] = []
        for stream, cursor in list(self._claiming.items()):
            try:
                reply: Any = await self.client.xautoclaim(
                    stream, GROUP, self.consumer, min_idle_time=min_idle_ms, start_id=cursor, count=each)
            except ResponseError as exc:
                if not is_nogroup(exc):
                    raise
                del self._claiming[stream]
                await self.ensure()
                continue
            following = text(reply[0]) if reply else "0-0"
            if following == "0-0":
                del self._claiming[stream]
            else:
                self._claiming[stream] = following
            out += _messages(reply[1] if reply else None, stream)
        return out

    @property
    def claim_scan_done(self) -> bool:
        """True when the last claim call reached the end of every pending list."""
        return not self._claiming

    async def settle(self, messages: list[Message], rejections: list[Rejection]) -> None:
        """Record refusals and acknowledge the batch: called only after the credits of the
        batch are committed, so an unacknowledged message is one not yet handled. One
        MULTI per partition with refusals (its stream and its refusals share a slot), so
        a refusal is recorded exactly when its entry is acknowledged."""
        by_stream: dict[str, list[Message]] = {}
        for message in messages:
            by_stream.setdefault(message.stream, []).append(message)
        refused: dict[str, list[Rejection]] = {}
        for rejection in rejections:
            refused.setdefault(rejection.message.stream, []).append(rejection)
        # Partitions with nothing refused need no MULTI: their XACKs share one pipeline, one
        # round trip for the usual batch (each XACK is one command, atomic by itself).
        plain = [(stream, mine) for stream, mine in by_stream.items() if stream not in refused]
        await asyncio.gather(
            *(self._settle_one(self._by_stream[stream], mine, refused[stream])
              for stream, mine in by_stream.items() if stream in refused),
            *([self._ack_all(plain)] if plain else []))

    async def _ack_all(self, batches: list[tuple[str, list[Message]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for stream, messages in batches:
            pipe.xack(stream, GROUP, *[m.id for m in messages])
        await pipe.execute()

    async def _settle_one(self, partition: Partition, messages: list[Message],
                          rejections: list[Rejection]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for rejection in rejections:
            pipe.xadd(
                partition.rejected,
                {"token": rejection.token, "reason": rejection.reason,
                 "detail": rejection.detail, "ingest_id": rejection.message.id},
                maxlen=REJECTED_MAXLEN, approximate=True,
            )
        pipe.xack(partition.stream, GROUP, *[m.id for m in messages])
        await pipe.execute()

    async def trim(self, *, exact: bool = False) -> None:
        """Drop entries every consumer is done with, in every partition and the old stream,
        so they do not grow forever."""
        for partition in [*self.partitions, self.legacy]:
            await trim_acknowledged(self.client, partition.stream, exact=exact)



async def unsettled(client: redis.Redis, keys: Keys, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Entries of every ingest stream (partitions and the old one) that the group has not
    delivered yet or not acknowledged: 0 when everything published is handled."""
    total = 0
    for partition in [*partitions_of(keys, partitions), legacy_of(keys)]:
        try:
            groups: Any = await client.xinfo_groups(partition.stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                continue
            raise
        group = next((g for g in groups if text(g["name"]) == GROUP), None)
        if group is None:
            total += int(await client.xlen(partition.stream))
            continue
        total += int(group["pending"]) + await group_lag(client, partition.stream, group)
    return total
