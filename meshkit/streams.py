"""Redis Streams helpers shared by producers and consumers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as redis
from opentelemetry.context import Context
from redis.exceptions import ResponseError

from meshkit.telemetry import TRACEPARENT, extract_from, inject_into

log = logging.getLogger(__name__)

T = TypeVar("T")


async def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and stream); a no-op when it exists. Called again after
    a NOGROUP error, since Redis may have restarted empty."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def trace_fields() -> dict[str, str]:
    """Fields that carry the current trace context on a stream entry."""
    carrier = inject_into({})
    return {TRACEPARENT: carrier[TRACEPARENT]} if TRACEPARENT in carrier else {}


def context_of(fields: dict[bytes, bytes] | dict[str, str]) -> Context:
    carrier: dict[str, str] = {}
    for key, value in fields.items():
        k = key.decode() if isinstance(key, bytes) else key
        if k == TRACEPARENT:
            carrier[k] = value.decode() if isinstance(value, bytes) else value
    return extract_from(carrier)


def is_nogroup(exc: Exception) -> bool:
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


async def recreating_group(client: redis.Redis, stream: str, group: str,
                           read: Callable[[], Awaitable[T]], nothing: T) -> T:
    """`read()` (an XREADGROUP or XAUTOCLAIM of `group`); `nothing` after recreating the
    group when it is missing: Redis restarted empty or the stream was deleted, and what
    was lost is republished by its producer, not read here."""
    try:
        return await read()
    except ResponseError as exc:
        if not is_nogroup(exc):
            raise
        log.warning("consumer group %s of %s missing; recreating it", group, stream)
        await ensure_group(client, stream, group)
        return nothing


def text(value: Any) -> str:
    """A reply field as text: redis-py answers bytes unless decoding is on."""
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A sort key of a stream entry id "<ms>-<seq>": ids compare as numbers, not text
    ("9-0" < "10-0"). An empty part counts as 0."""
    ms, _, seq = stream_id.partition("-")
    return int(ms or 0), int(seq or 0)


async def trim_acknowledged(client: redis.Redis, stream: str, *, exact: bool = False) -> None:
    """Drop the entries every consumer group of `stream` is done with: those below each
    group's oldest pending entry and its last delivered one (which stays, as the group's
    mark). Undelivered and pending entries of any group stay; a stream without groups
    (or without the stream) is left alone. Approximate trimming (whole nodes) unless exact."""
    try:
        groups: Any = await client.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return
        raise
    floor: str | None = None
    for group in groups:
        candidate = text(group["last-delivered-id"])
        pending: Any = await client.xpending(stream, group["name"])
        if pending and pending.get("pending") and pending.get("min"):
            candidate = text(pending["min"])
        if floor is None or stream_id_key(candidate) < stream_id_key(floor):
            floor = candidate
    if floor and floor != "0-0":
        await client.xtrim(stream, minid=floor, approximate=not exact)


async def group_lag(client: redis.Redis, stream: str, group: dict[Any, Any], limit: int = 100_000) -> int:
    """Entries of `stream` not yet delivered to `group` (an XINFO GROUPS row). Redis 7 says
    it as `lag`; Redis 6.2 (the fallback server) does not, nor does 7 after deletions: then
    count the entries after the last delivered id, up to `limit`."""
    lag = group.get("lag", group.get(b"lag"))
    if lag is not None:
        return int(lag)
    last = group.get("last-delivered-id", group.get(b"last-delivered-id", "0-0"))
    last = last.decode() if isinstance(last, bytes) else str(last)
    undelivered: Any = await client.xrange(stream, min="(" + last, count=limit)
    return len(undelivered)
