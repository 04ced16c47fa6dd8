"""Per-user rate limits shared by every replica: one Redis script call per checked call
(INCR of the user's counter, its window set on the first call), keys under the mesh's
prefix. A fixed window of WINDOW_MS: cheap and exact enough for abuse limits (a user can
at most double the rate across a window boundary); a refused call counts too, so hammering
does not get through sooner, but it never lengthens the window.

Redis unreachable: the call is let through (logged once per outage). The limit guards
against abuse, not money: every money rule holds in PostgreSQL without it."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import grpc
import redis.asyncio as redis

from meshkit.errors import RateLimited
from meshkit.interceptors import PUSHBACK_HEADER, RETRY_AFTER_HEADER
from meshkit.outage import OutageLog
from meshkit.redis_keys import Keys

log = logging.getLogger(__name__)
_outages = OutageLog(log)

WINDOW_MS = 60_000

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


class UserRateLimit:
    """At most `per_minute` calls of kind `name` per uid per window; 0 disables."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str, per_minute: int, what: str) -> None:
        self.keys = keys
        self.name = name
        self.per_minute = per_minute
        # "withdrawals": the refusal says "too many withdrawals for this user".
        self.what = what
        self.script = client.register_script(_COUNT)

    async def check(self, uid: int) -> None:
        """Count this call of `uid`; RateLimited when it is over the limit."""
        if self.per_minute <= 0:
            return
        try:
            count, ttl_ms = await self.script(keys=[self.keys.user_rate(self.name, uid)], args=[WINDOW_MS])
        except Exception as exc:
            _outages.failed(exc, "%s rate limit not checked", self.name)
            return
        if int(count) > self.per_minute:
            wait_ms = max(1, int(ttl_ms))
            raise RateLimited(
                f"too many {self.what} for this user; retry after {math.ceil(wait_ms / 1000)} s",
                retry_after_ms=wait_ms,
            )


@contextlib.contextmanager
def retry_hint(context: grpc.aio.ServicerContext) -> Iterator[None]:
    """A RateLimited raised inside answers with `retry-after-ms` (and gRPC's pushback
    header) in the trailing metadata; the server interceptor then maps the error."""
    try:
        yield
    except RateLimited as exc:
        hint = str(exc.retry_after_ms)
        context.set_trailing_metadata(((RETRY_AFTER_HEADER, hint), (PUSHBACK_HEADER, hint)))
        raise
