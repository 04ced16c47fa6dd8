"""Background loops of recon_svc: one follower per feed, the checker, the self-checker and
the auditor. Each stops cooperatively: the page or batch in hand is finished first."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from meshkit.background import sleep_or_stop
from meshkit.errors import Unavailable
from meshkit.timeconv import utcnow
from recon_svc.peers import FeedClient
from recon_svc.service import ReconService

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0


class FeedFollower:
    """Polls one feed: pages are applied with their cursor in one transaction, so a crash
    replays at most the page in hand, and replaying it changes nothing. While the feed has
    nothing new, the interval doubles up to the idle one: an idle recon costs a few polls a
    second, not fifteen."""

    def __init__(self, service: ReconService, client: FeedClient, poll_s: float, idle_s: float,
                 page_size: int) -> None:
        self.service = service
        self.client = client
        self.poll_s = poll_s
        self.idle_s = max(idle_s, poll_s)
        self.page_size = page_size

    async def run(self, stopping: asyncio.Event) -> None:
        feed = self.client.feed
        cursor = await self.service.cursor_of(feed)
        backoff = self.poll_s
        pause = self.poll_s
        while not stopping.is_set():
            started = utcnow()
            try:
                changes, next_cursor = await self.client.read(cursor, self.page_size)
            except Unavailable as exc:
                log.warning("feed %s: %s; retrying in %.1fs", feed, exc, backoff)
                if await sleep_or_stop(stopping, backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = self.poll_s
            if changes:
                try:
                    applied = await self.service.apply_page(feed, cursor, changes, next_cursor)
                except asyncpg.DeadlockDetectedError:
                    log.info("feed %s: deadlock applying a page; retrying it", feed)
                    continue
                if not applied:
                    # Another replica applied this page first: continue from where it is.
                    cursor = await self.service.cursor_of(feed)
                    continue
                cursor = next_cursor
                self.service.checks_queued.set()
                pause = self.poll_s
            if len(changes) < self.page_size:
                self.service.heads.reached(feed, started)
                if await nap(stopping, self.service.feed_wanted[feed], pause):
                    return
                if not changes:
                    pause = min(pause * 2, self.idle_s)


async def nap(stopping: asyncio.Event, wake: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds` or until `wake` is set (then cleared); True when asked to stop."""
    if not wake.is_set():
        waiters = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(wake.wait())]
        _done, pending = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    wake.clear()
    return stopping.is_set()


async def checker_loop(service: ReconService, stopping: asyncio.Event) -> None:
    interval = service.settings.check_interval_s
    idle = max(service.settings.idle_poll_s, interval)
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        ran_at = loop.time()
        try:
            judged, next_due = await service.run_checks()
        except asyncpg.DeadlockDetectedError:
            log.info("checker: deadlock with a feed page; retrying")
            continue
        if judged >= service.settings.check_batch:
            continue  # a full batch: more are due, go on at once
        until = (next_due - utcnow()).total_seconds() if next_due else idle
        if judged:
            pause = interval
        elif until <= 0:
            # Due, but not every feed was read past its due time yet: have them read now
            # rather than at their next idle poll.
            for wanted in service.feed_wanted.values():
                wanted.set()
            pause = interval
        else:
            # Nothing due: sleep until the next check is (a feed page that queues one wakes
            # this loop earlier), at most the idle interval.
            pause = min(idle, max(interval, until))
        if await nap(stopping, service.checks_queued, pause):
            return
        # Woken by a feed page: still no more often than every interval (under load every
        # page of every feed would wake it).
        if (left := ran_at + interval - loop.time()) > 0 and await sleep_or_stop(stopping, left):
            return


async def self_check_loop(service: ReconService, stopping: asyncio.Event) -> None:
    interval = max(service.settings.check_interval_s, 0.2)
    idle = max(service.settings.idle_poll_s, interval)
    pause = interval
    while not stopping.is_set():
        claimed = await service.run_self_checks()
        if claimed >= service.settings.self_check_batch:
            continue  # a full batch: more are due, go on at once
        # Verdicts queue self-checks and wake this loop; until then it backs off.
        pause = interval if claimed else min(pause * 2, idle)
        if await nap(stopping, service.self_checks_queued, pause):
            return


async def audit_loop(service: ReconService, stopping: asyncio.Event) -> None:
    while not await sleep_or_stop(stopping, service.settings.audit_interval_s):
        await service.audit()
