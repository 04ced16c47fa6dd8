"""The reward ingest stream as account_svc consumes it: one consumer group shared by all
replicas, a pending list per consumer, and a side stream for tokens that were refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

from meshkit.redis_keys import Keys
from meshkit.streams import ensure_group, recreating_group, text, trim_acknowledged

GROUP = "account-credit"
# One token per entry, or several newline-separated (see campaign/publish.py).
TOKEN_FIELD = b"token"
TOKENS_FIELD = b"tokens"
# Refused tokens are kept for inspection, not forever.
REJECTED_MAXLEN = 100_000


@dataclass(frozen=True)
class Message:
    id: str
    fields: dict[bytes, bytes]

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


def _messages(entries: list[tuple[bytes, dict[bytes, bytes]]] | None) -> list[Message]:
    out: list[Message] = []
    for entry_id, fields in entries or []:
        # XAUTOCLAIM reports entries trimmed meanwhile with no fields.
        if fields is None:
            continue
        out.append(Message(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id), fields))
    return out


class IngestStream:
    def __init__(self, client: redis.Redis, keys: Keys, consumer: str) -> None:
        self.client = client
        self.stream = keys.rewards_ingest()
        self.rejected = keys.rewards_rejected()
        self.consumer = consumer
        # XAUTOCLAIM scans the pending list a page at a time; resume where the last call
        # stopped so stale entries behind live ones are reached too.
        self._claim_cursor = "0-0"

    async def ensure(self) -> None:
        await ensure_group(self.client, self.stream, GROUP)

    async def read(self, count: int, block_ms: int, *, own_pending: bool = False) -> list[Message]:
        """New messages (or, with own_pending, this consumer's unacknowledged ones)."""
        reply: Any = await recreating_group(self.client, self.stream, GROUP, lambda: self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: "0" if own_pending else ">"},
            count=count, block=None if own_pending else block_ms,
        ), None)
        if not reply:
            return []
        first: Any = reply[0]
        return _messages(first[1])

    async def claim_stale(self, min_idle_ms: int, count: int) -> list[Message]:
        """Take over messages that another (dead) consumer read and never acknowledged."""
        reply: Any = await recreating_group(self.client, self.stream, GROUP, lambda: self.client.xautoclaim(
            self.stream, GROUP, self.consumer, min_idle_time=min_idle_ms,
            start_id=self._claim_cursor, count=count,
        ), None)
        if not reply:
            return []
        self._claim_cursor = text(reply[0])
        return _messages(reply[1])

    @property
    def claim_scan_done(self) -> bool:
        """True when the last claim call reached the end of the pending list."""
        return self._claim_cursor == "0-0"

    async def settle(self, messages: list[Message], rejections: list[Rejection]) -> None:
        """Record refusals and acknowledge the batch: called only after the credits of the
        batch are committed, so an unacknowledged message is one not yet handled."""
        if not messages:
            return
        pipe = self.client.pipeline(transaction=True)
        for rejection in rejections:
            pipe.xadd(
                self.rejected,
                {"token": rejection.token, "reason": rejection.reason,
                 "detail": rejection.detail, "ingest_id": rejection.message.id},
                maxlen=REJECTED_MAXLEN, approximate=True,
            )
        pipe.xack(self.stream, GROUP, *[m.id for m in messages])
        await pipe.execute()

    async def trim(self, *, exact: bool = False) -> None:
        """Drop entries every consumer is done with, so the stream does not grow forever."""
        await trim_acknowledged(self.client, self.stream, exact=exact)
