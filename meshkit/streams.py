"""Redis Streams helpers shared by producers and consumers."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from opentelemetry.context import Context
from redis.exceptions import ResponseError

from meshkit.telemetry import TRACEPARENT, extract_from, inject_into


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
