"""The loops of payout_svc, per channel: workers reading the stream, a reclaimer taking
over messages of crashed consumers, and the poller of asynchronous payouts."""

from __future__ import annotations

import asyncio
import logging
import time

from meshkit.background import sleep_or_stop
from meshkit.outage import OutageLog, outage_of
from payout_svc.batch import BatchPayoutProcessor
from payout_svc.domain import Delivery, outage_backoff_s
from payout_svc.service import RATE_RECHECK_S, AwaitingChecker, ChannelRates, PayoutProcessor
from payout_svc.streams import ChannelQueue

log = logging.getLogger(__name__)
_outages = OutageLog(log)

READ_BLOCK_MS = 500
HOUSEKEEPING_EVERY_S = 10.0
AWAIT_POLL_EVERY_S = 0.2
AWAIT_BATCH = 100
# Pause of a worker loop while Redis is away: doubles from the first to the last value.
OUTAGE_BACKOFF_MS = 200
OUTAGE_BACKOFF_MAX_MS = 2000


class ChannelWorkers:
    def __init__(self, channel: str, workers: int, queue: ChannelQueue, processor: PayoutProcessor,
                 checker: AwaitingChecker, claim_idle_ms: int, lease_ms: int, batch_size: int = 1,
                 linger_ms: int = 0) -> None:
        self.channel = channel
        self.workers = workers
        # Messages a worker takes at once; 1 is one message at a time through handle(), and
        # more needs a processor that pays batches.
        self.batch_size = batch_size if isinstance(processor, BatchPayoutProcessor) else 1
        # A short read waits this long for company before it is paid: every batch costs the
        # same calls (BeginPayoutBatch, PayoutBatch, SettlePayoutBatch, XACK) whatever its
        # size, and at tens of orders per second per channel reads return one message each.
        # A full read never waits, so a deep backlog drains at once.
        self.linger_s = linger_ms / 1000.0 if self.batch_size > 1 else 0.0
        self.queue = queue
        self.processor = processor
        self.checker = checker
        self.claim_idle_ms = claim_idle_ms
        self.lease_ms = lease_ms
        # Reclaimed messages wait here for a free worker; bounded so we only take over
        # what we can work on soon.
        self.claimed: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=workers * self.batch_size)

    async def work(self, stopping: asyncio.Event) -> None:
        """One worker: one message (or one batch) in hand at a time. On stop it finishes
        that and reads no more; anything not finished stays un-acked for another consumer. A
        dependency away pauses the worker, which then carries on; a message it had in hand
        stays pending and is reclaimed after claim_idle_ms."""
        pause = 0.0
        while not stopping.is_set():
            if self.processor.paused(self.channel):
                # Paused: take nothing, so no message spends an attempt or waits in hand.
                await sleep_or_stop(stopping, RATE_RECHECK_S)
                continue
            try:
                await self._work_one(stopping)
                pause = 0.0
            except Exception as exc:
                outage = outage_of(exc)
                if outage is None:
                    raise
                pause = outage_backoff_s(pause, OUTAGE_BACKOFF_MS, OUTAGE_BACKOFF_MAX_MS)
                _outages.warn(f"payout worker of {self.channel} (pausing {pause:.1f}s)", outage)
                await sleep_or_stop(stopping, pause)

    async def _work_one(self, stopping: asyncio.Event) -> None:
        deliveries: list[Delivery] = []
        while len(deliveries) < self.batch_size:
            try:
                deliveries.append(self.claimed.get_nowait())
            except asyncio.QueueEmpty:
                break
        if not deliveries:
            deliveries = await self.queue.read(self.channel, self.batch_size, READ_BLOCK_MS)
            if not deliveries:
                return
            if 0 < self.linger_s and len(deliveries) < self.batch_size:
                if not await sleep_or_stop(stopping, self.linger_s):
                    wanted = self.batch_size - len(deliveries)
                    deliveries = deliveries + await self.queue.read(self.channel, wanted, None)
        if isinstance(self.processor, BatchPayoutProcessor) and self.batch_size > 1:
            await self.processor.handle_batch(deliveries)
        else:
            for delivery in deliveries:
                await self.processor.handle(delivery)
        if (pause := self.processor.pause_of(self.channel)) > 0:
            # A dependency was away: the next message would most likely find it away too.
            await sleep_or_stop(stopping, pause)

    async def reclaim(self, stopping: asyncio.Event) -> None:
        last_housekeeping = 0.0
        while not await sleep_or_stop(stopping, self.claim_idle_ms / 2000.0):
            free = self.claimed.maxsize - self.claimed.qsize()
            if free > 0 and not self.processor.paused(self.channel):
                taken = await self.queue.autoclaim(self.channel, self.claim_idle_ms, free)
                for delivery in taken:
                    self.claimed.put_nowait(delivery)
                if taken:
                    log.info("reclaimed %d idle messages on %s", len(taken), self.channel)
            if time.monotonic() - last_housekeeping > HOUSEKEEPING_EVERY_S:
                last_housekeeping = time.monotonic()
                await self.queue.trim(self.channel)
                reaped = await self.queue.reap_consumers(self.channel, max(600_000, 10 * self.claim_idle_ms))
                if reaped:
                    log.info("forgot %d dead consumers on %s", reaped, self.channel)

    async def follow_awaiting(self, stopping: asyncio.Event) -> None:
        while not await sleep_or_stop(stopping, AWAIT_POLL_EVERY_S):
            if self.processor.paused(self.channel):
                continue  # a paused channel makes no gateway calls, queries included
            for order_id in await self.queue.claim_due(self.channel, self.lease_ms, AWAIT_BATCH):
                if stopping.is_set():
                    break  # the lease brings it back
                try:
                    done = await self.checker.check(self.channel, order_id)
                except Exception as exc:
                    if (outage := outage_of(exc)) is None:
                        log.warning("checking awaited payout %s failed; checked again later", order_id,
                                    exc_info=True)
                        continue
                    _outages.warn(f"awaited payouts of {self.channel}", outage)
                    done = "away"
                if done == "away":
                    # The rest of the batch would find it away too; their leases bring them back.
                    break


async def refresh_rates(rates: ChannelRates, every_s: float, stopping: asyncio.Event) -> None:
    while not await sleep_or_stop(stopping, every_s):
        await rates.refresh()
