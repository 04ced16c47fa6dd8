"""The loops of payout_svc, per channel: workers reading the stream, a reclaimer taking
over messages of crashed consumers, and the poller of asynchronous payouts."""

from __future__ import annotations

import asyncio
import logging
import time

from meshkit.background import sleep_or_stop
from payout_svc.domain import Delivery
from payout_svc.service import RATE_RECHECK_S, AwaitingChecker, ChannelRates, PayoutProcessor
from payout_svc.streams import ChannelQueue

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500
HOUSEKEEPING_EVERY_S = 10.0
AWAIT_POLL_EVERY_S = 0.2
AWAIT_BATCH = 100


class ChannelWorkers:
    def __init__(self, channel: str, workers: int, queue: ChannelQueue, processor: PayoutProcessor,
                 checker: AwaitingChecker, claim_idle_ms: int, lease_ms: int) -> None:
        self.channel = channel
        self.workers = workers
        self.queue = queue
        self.processor = processor
        self.checker = checker
        self.claim_idle_ms = claim_idle_ms
        self.lease_ms = lease_ms
        # Reclaimed messages wait here for a free worker; bounded so we only take over
        # what we can work on soon.
        self.claimed: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=workers)

    async def work(self, stopping: asyncio.Event) -> None:
        """One worker: one message in hand at a time. On stop it finishes that message and
        reads no more; anything not finished stays un-acked for another consumer."""
        while not stopping.is_set():
            if self.processor.paused(self.channel):
                # Paused: take nothing, so no message spends an attempt or waits in hand.
                await sleep_or_stop(stopping, RATE_RECHECK_S)
                continue
            try:
                delivery = self.claimed.get_nowait()
            except asyncio.QueueEmpty:
                batch = await self.queue.read(self.channel, 1, READ_BLOCK_MS)
                if not batch:
                    continue
                delivery = batch[0]
            await self.processor.handle(delivery)

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
                    await self.checker.check(self.channel, order_id)
                except Exception:
                    log.warning("checking awaited payout %s failed; checked again later", order_id,
                                exc_info=True)


async def refresh_rates(rates: ChannelRates, every_s: float, stopping: asyncio.Event) -> None:
    while not await sleep_or_stop(stopping, every_s):
        await rates.refresh()
