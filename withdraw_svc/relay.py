"""The two outbox relays: PAYOUT jobs to the channel streams, REFUND jobs to the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from datetime import datetime

from meshkit.background import sleep_or_stop
from meshkit.outage import OutageLog
from meshkit.streams import stream_id_key
from withdraw_svc.faults import BeforeRefund
from withdraw_svc.peers import PeerError
from withdraw_svc.ports import ClaimedRefundsPort, LedgerRefunds, PayoutOutbox, PayoutStreams, RefundOutbox
from withdraw_svc.records import RefundRow
from withdraw_svc.settings import Settings

log = logging.getLogger(__name__)
_outages = OutageLog(log)


async def _wait_wake(wake: asyncio.Event, stopping: asyncio.Event, timeout: float) -> None:
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopping.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w


# Jobs the sweep looks at per pass; the next pass goes on from where this one stopped.
SWEEP_PAGE = 5000
# Every in-flight job is looked at after a lineage change, whatever its republish count.
NO_CAP = 2**31 - 1
# How often the lineages are read besides with each publish (a channel still published to
# is followed with every batch; this catches the failover of a quiet one).
LINEAGE_CHECK_S = 1.0


class OutboxRelay:
    """Publishes PAYOUT jobs. PostgreSQL is the truth: when the Redis epoch key vanishes
    (Redis restarted empty), the replica that re-creates it republishes every job whose
    order has not settled. Between wipes, a sweep republishes jobs published long ago
    that nothing in Redis waits on any more, at most `republish_cap` times each.

    A failover loses less than a wipe, and the epoch key may survive it: a replica promoted
    on a Redis Cluster (or under Sentinel) lacks only the writes it had not received yet, an
    entry the relay saw acknowledged among them. So the relay also follows each channel's
    lineage (the replication id of the master serving the channel's slot, read in the same
    pipeline as the channel's entries, and on every epoch check): when it changes, every
    in-flight job of that channel whose own entry, dead letter, awaited payout or lock is
    not in Redis goes out again (check_lineages)."""

    def __init__(self, settings: Settings, repo: PayoutOutbox, redis: PayoutStreams) -> None:
        self.settings = settings
        self.repo = repo
        self.redis = redis
        self.wake = asyncio.Event()
        self.epoch: str | None = None
        self._claim: str | None = None
        self._last_stale_check = 0.0
        self._sweep_after: tuple[datetime, int] | None = None
        # channel -> the lineage its published entries were last seen under.
        self.lineages: dict[str, str] = {}
        self._last_lineage_check = 0.0

    async def start(self) -> None:
        await self.check_epoch()

    def nudge(self) -> None:
        """Publish now rather than at the next interval."""
        self.wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self.wake.clear()
            try:
                await self.tick(stopping)
            except Exception as exc:
                _outages.failed(exc, "outbox relay pass failed; retrying")
            await _wait_wake(self.wake, stopping, self.settings.relay_interval_s)
            if self.wake.is_set() and self.settings.relay_linger_s > 0:
                # Each pass costs a transaction and a Redis pipeline however few jobs it
                # carries; woken by every confirm, it would carry one or two.
                await sleep_or_stop(stopping, self.settings.relay_linger_s)

    async def tick(self, stopping: asyncio.Event | None = None) -> int:
        await self.check_epoch()
        published = 0
        while stopping is None or not stopping.is_set():
            n = await self.publish_pending()
            published += n
            if n < self.settings.relay_batch:
                break
        now = time.monotonic()
        if now - self._last_stale_check >= self.settings.republish_check_s:
            self._last_stale_check = now
            await self.republish_stale()
        return published

    async def publish_pending(self) -> int:
        """One batch of unpublished jobs onto their streams, marked published in the
        transaction that claimed them."""
        async with self.repo.claim_unpublished(self.settings.relay_batch) as claim:
            if claim.jobs:
                published = await self.redis.publish(claim.jobs)
                await claim.mark_published(published.ids)
        if claim.jobs:
            # After the commit: a job found lost is re-opened by another statement, which
            # must see this one's stream ids.
            await self._follow(published.lineages)
        return len(claim.jobs)

    async def check_lineages(self) -> int:
        """Re-read the lineage of every channel published to; the jobs re-opened."""
        if not self.lineages:
            return 0
        return await self._follow(await self.redis.lineages(sorted(self.lineages)))

    async def _follow(self, seen: dict[str, str]) -> int:
        changed = sorted(ch for ch, lineage in seen.items()
                         if ch in self.lineages and lineage != self.lineages[ch])
        reopened = 0
        for channel in changed:
            reopened += await self._reverify(channel)
            log.warning("Redis master of channel %s changed lineage (%s -> %s: failover or "
                        "restart); re-opened the payout jobs it no longer holds",
                        channel, self.lineages[channel], seen[channel])
        # Adopted only once verified: a verification that failed is tried again next time.
        self.lineages.update(seen)
        if reopened:
            self.wake.set()
        return reopened

    async def _reverify(self, channel: str) -> int:
        after: tuple[datetime, int] | None = None
        reopened = 0
        while True:
            page = await self.repo.in_flight_jobs(0, NO_CAP, after, SWEEP_PAGE)
            mine = [job for job in page if job.channel == channel]
            if mine:
                held = await self.redis.still_held(mine)
                lost = [job for job, h in zip(mine, held, strict=True) if not h]
                n = await self.repo.reopen_lost(lost)
                if n:
                    log.warning("channel %s: %d payout jobs lost by Redis, republishing", channel, n)
                reopened += n
            if len(page) < SWEEP_PAGE:
                return reopened
            after = (page[-1].published_at, page[-1].outbox_id)

    async def check_epoch(self) -> None:
        now = time.monotonic()
        if now - self._last_lineage_check >= LINEAGE_CHECK_S:
            await self.check_lineages()
            self._last_lineage_check = now
        current = await self.redis.epoch()
        if current is None:
            # Redis lost its data (or this is its first start). The claim's token is kept
            # until its outcome is known, so a claim whose reply was lost still counts as
            # this replica's win on the next pass.
            self._claim = self._claim or secrets.token_hex(8)
            current = await self.redis.claim_epoch(self._claim)
        if current is not None and current == self.epoch:
            return
        if current is not None and current == self._claim:
            n = await self.repo.republish_all_in_flight()
            log.warning("Redis lost its data (epoch key gone): claimed epoch %s, republishing %d "
                        "payout jobs", current, n)
        # Otherwise another replica noticed the wipe first and republished. The epoch is
        # adopted only now: a republish that failed is tried again on the next pass.
        self.epoch, self._claim = current, None

    async def republish_stale(self) -> int:
        """One sweep pass. A job nothing waits on is put back once more, up to the cap:
        a dead letter stays where payout_svc put it (at most its attempts, then the
        operator or the compensation job), and beyond the cap the compensation job is the
        one that pushes the order on."""
        cap = self.settings.republish_cap
        if cap <= 0:
            return 0
        jobs = await self.repo.in_flight_jobs(self.settings.republish_after_s, cap, self._sweep_after,
                                              SWEEP_PAGE)
        # Paging on, instead of starting over each time, keeps the jobs that rightly wait
        # for long (dead letters, a long backlog) from hiding the ones behind them.
        self._sweep_after = (jobs[-1].published_at, jobs[-1].outbox_id) if len(jobs) == SWEEP_PAGE else None
        if not jobs:
            return 0
        seen = await self.redis.in_redis(jobs, self.settings.payout_group)
        lost = [job for job, found in zip(jobs, seen, strict=True) if not found.waiting]
        n = await self.repo.claim_republish(lost, cap)
        if n:
            log.warning("republishing %d payout jobs published over %ds ago that nothing in Redis "
                        "waits on", n, self.settings.republish_after_s)
            self.wake.set()
        return n

    async def queued(self, channel: str, stream_id: str) -> bool:
        """Whether the channel's stream entry `stream_id` still waits to be delivered: it is
        beyond the group's read position and still there (a stream deleted and made anew
        starts with no group, and every old id would look ahead of it)."""
        return (_ahead(stream_id, await self._delivered_upto(channel))
                and await self.redis.has_entry(channel, stream_id))

    async def _delivered_upto(self, channel: str) -> tuple[int, int] | None:
        """The group's last delivered id; (0, 0) when the stream exists without the group
        (nothing consumed yet, so nothing is lost); None when the stream is gone."""
        upto = await self.redis.last_delivered(channel, self.settings.payout_group)
        if upto is not None:
            return upto
        return (0, 0) if await self.redis.stream_exists(channel) else None


def _ahead(stream_id: str, delivered_upto: tuple[int, int] | None) -> bool:
    return delivered_upto is not None and bool(stream_id) and stream_id_key(stream_id) > delivered_upto


class RefundRelay:
    """Settles REFUND jobs with the ledger: Refund(order_id) returns the debit once, or voids
    an order id that was never debited. Failures are retried with backoff."""

    def __init__(self, settings: Settings, repo: RefundOutbox, account: LedgerRefunds,
                 before_refund: BeforeRefund | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.account = account
        self.before_refund = before_refund  # a drill's or a test's fault (faults.py)
        self.wake = asyncio.Event()

    def nudge(self) -> None:
        """Settle due refunds now rather than at the next interval."""
        self.wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self.wake.clear()
            try:
                while await self.process() == self.settings.refund_batch and not stopping.is_set():
                    pass
            except Exception as exc:
                _outages.failed(exc, "refund relay pass failed; retrying")
            await _wait_wake(self.wake, stopping, self.settings.relay_interval_s)

    async def process(self, order_ids: Sequence[str] | None = None) -> int:
        """Settle due refund jobs, skipping those another worker holds; or those of
        `order_ids`, due or not, waiting for any another worker holds."""
        async with self.repo.claim_refunds(self.settings.refund_batch, order_ids) as claim:
            if claim.jobs:
                await self._settle(claim)
            return len(claim.jobs)

    async def _settle(self, claim: ClaimedRefundsPort) -> None:
        results = await asyncio.gather(*(self._refund(row) for row in claim.jobs))
        for row, outcome, error in results:
            if outcome:
                await claim.done(row, outcome)
                log.info("refund of %s: %s", row.order_id, outcome, extra={"order_id": row.order_id})
            else:
                backoff = min(2.0 ** min(row.attempts, 16), float(self.settings.refund_max_backoff_s))
                await claim.retry_after(row, error, backoff)
                log.warning("refund of %s failed (attempt %d), retry in %.0fs: %s",
                            row.order_id, row.attempts + 1, backoff, error)

    async def _refund(self, row: RefundRow) -> tuple[RefundRow, str, str]:
        if self.before_refund is not None:
            self.before_refund(row.order_id)
        try:
            return row, await self.account.refund(row.order_id), ""
        except PeerError as err:
            return row, "", str(err)
