"""The dead letters of each channel: payout jobs given up on (at most max_attempts, or not
readable at all), kept in a stream of their own for an operator to look at and replay, and
counted per order so that withdraw_svc's sweep never puts one back behind the operator's
back."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from meshkit.redis_keys import Keys
from meshkit.streams import text
from meshkit.timeconv import utcnow
from payout_svc.domain import DeadLetter, Delivery, Job
from payout_svc.jobs import JOB, TRACEPARENT, decode_job, encode_job

log = logging.getLogger(__name__)

MAX_REASON_LEN = 1000

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


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._replay = client.register_script(_REPLAY)

    def bury(self, pipe: Pipeline, delivery: Delivery, job: Job | None, reason: str, attempts: int) -> None:
        """Queue the dead letter of `delivery` on the caller's MULTI, which also acks the
        message: a crash leaves the message or its letter, never both or neither."""
        fields: dict[Any, Any] = {
            JOB: encode_job(job) if job is not None else delivery.raw_job,
            "reason": reason[:MAX_REASON_LEN], "attempts": str(attempts), "dead_time": utcnow().isoformat(),
            "source_id": delivery.entry_id,
        }
        if delivery.traceparent:
            fields[TRACEPARENT] = delivery.traceparent
        pipe.xadd(self.keys.payout_dead_letters(delivery.channel), fields)
        if job is not None:
            pipe.hincrby(self.keys.payout_dead_orders(delivery.channel), job.order_id, 1)

    async def count(self, channel: str) -> int:
        return int(await self.redis.xlen(self.keys.payout_dead_letters(channel)))

    async def read(self, channel: str, limit: int, after: str | None = None) -> list[DeadLetter]:
        """The oldest `limit` dead letters of the channel (after the entry id `after`)."""
        # "(" makes the start exclusive: the page begins after the last letter shown.
        entries: Any = await self.redis.xrange(self.keys.payout_dead_letters(channel),
                                               min=f"({after}" if after else "-", count=limit)
        return [_dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def replay(self, channel: str, ids: list[str]) -> int:
        """Put dead letters (all of them when `ids` is empty) back on the stream with
        attempt 0. The script publishes a letter only if it also deletes it, so a letter
        replayed twice (or by two operators at once) goes back once."""
        dlq = self.keys.payout_dead_letters(channel)
        if not ids:
            everything: Any = await self.redis.xrange(dlq)
            ids = [text(entry_id) for entry_id, _ in everything]
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
                keys=[dlq, self.keys.payout_stream(channel), self.keys.payout_dead_orders(channel)],
                args=[entry_id, encode_job(fresh), trace, job.order_id]))
        return replayed


def _dead_letter(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
    job = decode_job(fields.get(b"job", b"")) or Job("", 0, "", "", 0)
    dead_time = None
    if raw := fields.get(b"dead_time"):
        try:
            dead_time = datetime.fromisoformat(text(raw))
        except ValueError:
            dead_time = None
    return DeadLetter(text(entry_id), job, text(fields.get(b"reason", b"")),
                      int(fields.get(b"attempts", b"0") or 0), dead_time)
