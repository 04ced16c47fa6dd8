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
    replays at most the page in hand, and replaying it changes nothing."""

    def __init__(self, service: ReconService, client: FeedClient, poll_s: float, page_size: int) -> None:
        self.service = service
        self.client = client
        self.poll_s = poll_s
        self.page_size = page_size

    async def run(self, stopping: asyncio.Event) -> None:
        feed = self.client.feed
        cursor = await self.service.repo.cursor_of(feed)
        backoff = self.poll_s
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
                    cursor = await self.service.repo.cursor_of(feed)
                    continue
                cursor = next_cursor
            if len(changes) < self.page_size:
                self.service.heads.reached(feed, started)
                if await sleep_or_stop(stopping, self.poll_s):
                    return


async def checker_loop(service: ReconService, stopping: asyncio.Event) -> None:
    interval = service.settings.check_interval_s
    while not stopping.is_set():
        try:
            judged = await service.run_checks()
        except asyncpg.DeadlockDetectedError:
            log.info("checker: deadlock with a feed page; retrying")
            continue
        # A full batch means more are due: go on at once.
        if judged < service.settings.check_batch and await sleep_or_stop(stopping, interval):
            return


async def self_check_loop(service: ReconService, stopping: asyncio.Event) -> None:
    interval = max(service.settings.check_interval_s, 0.2)
    while not stopping.is_set():
        done = await service.run_self_checks()
        if not done and await sleep_or_stop(stopping, interval):
            return


async def audit_loop(service: ReconService, stopping: asyncio.Event) -> None:
    while not await sleep_or_stop(stopping, service.settings.audit_interval_s):
        await service.audit()
