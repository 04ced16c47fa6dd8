"""Leader election by lease row: one replica runs a job that must run once across them.

`Lease(pool, name)` competes for the row `name` of the schema's `leases` table
(meshkit/migrations/002_leases.sql): `keep()` is a background loop that renews the lease
while held and tries to take it otherwise, every `renew_s`; `held()` says whether this
process may act now (meshkit.leases.Tenure: until ttl_s after the latest granted request
was sent). `led(lease, loop)` runs a loop only while its lease is held; the loop's stop
event reports set as soon as the lease is not held, so a loop that checks it before each
batch (as every loop of meshkit.background does) stops within one batch of losing it --
a hung process that wakes after its term finds it gone before touching anything. Every
money write is compare-and-set besides: a lease keeps duplicate work and duplicate alerts
away, it is not what keeps money right.

A row, not a session advisory lock: one statement per attempt works through a
transaction-pooling PgBouncer, where a session is never one's own. A SIGKILLed or hung
holder's lease expires after ttl_s (3 s) and the next attempt of another replica (within
renew_s, 0.75 s) takes it: under 5 s. A holder stopping cleanly gives the lease up at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg

from meshkit.background import Loop, sleep_or_stop
from meshkit.leases import LeaseTerms, Tenure
from meshkit.outage import OutageLog

log = logging.getLogger(__name__)
# Every lease of a process fails alike while PostgreSQL is away: one line a second for all.
_outages = OutageLog(log)

# ttl 3 s, renewed every 0.75 s: a dead holder's job is taken over in at most ~3.75 s.
DEFAULT_TERMS = LeaseTerms()

# Taken when free, kept by its holder, taken over once expired; the epoch counts hands.
_ACQUIRE = """
INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
    SET holder = excluded.holder, expires_at = excluded.expires_at,
        epoch = leases.epoch + CASE WHEN leases.holder = excluded.holder THEN 0 ELSE 1 END
    WHERE leases.holder = excluded.holder OR leases.expires_at <= now()
RETURNING epoch
"""
_RELEASE = "UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2 AND expires_at > now()"
_HOLDER = "SELECT holder FROM leases WHERE name = $1 AND expires_at > now()"


def process_holder() -> str:
    """This process's name as a lease holder: host, pid and a random part (pids repeat)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaseStore:
    """The `leases` table of one schema, one statement per call."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def acquire(self, name: str, holder: str, ttl_s: float, timeout_s: float) -> int | None:
        """The epoch of the term granted to `holder`, or None while another holds it."""
        epoch = await self.pool.fetchval(_ACQUIRE, name, holder, ttl_s, timeout=timeout_s)
        return None if epoch is None else int(epoch)

    async def release(self, name: str, holder: str) -> None:
        await self.pool.execute(_RELEASE, name, holder, timeout=2.0)

    async def holder(self, name: str) -> str | None:
        """Who holds `name` now (None when nobody's term is running)."""
        value = await self.pool.fetchval(_HOLDER, name)
        return None if value is None else str(value)


class Lease:
    def __init__(self, store: LeaseStore, name: str, holder: str | None = None,
                 terms: LeaseTerms = DEFAULT_TERMS, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.name = store, name
        self.holder = holder or process_holder()
        self.terms = terms
        self.clock = clock
        self.tenure = Tenure(terms)
        self.epoch: int | None = None
        self._running = False  # a try_hold body runs

    def held(self) -> bool:
        return self.tenure.held(self.clock())

    async def attempt(self) -> bool:
        """Take or renew the lease once; whether it is held afterwards. A failed statement
        (database away) changes nothing: the current term runs out on its own."""
        sent = self.clock()
        epoch = await self.store.acquire(self.name, self.holder, self.terms.ttl_s,
                                         timeout_s=self.terms.ttl_s / 2)
        if epoch is None:
            if self.tenure.requested_at is not None:
                log.warning("lease %s lost (another replica holds it)", self.name)
            self.tenure.refused()
            self.epoch = None
            return False
        if self.epoch != epoch:
            log.info("lease %s taken (epoch %d) by %s", self.name, epoch, self.holder)
        self.tenure.granted(sent)
        self.epoch = epoch
        return True

    async def release(self) -> None:
        """Give the lease up now (a clean stop): another replica takes it at its next try."""
        if self.tenure.requested_at is None:
            return
        self.tenure.refused()
        self.epoch = None
        with contextlib.suppress(Exception):
            await self.store.release(self.name, self.holder)

    async def keep(self, stopping: asyncio.Event) -> None:
        """Renew while held, try while not, every renew_s; release on stop."""
        try:
            while not stopping.is_set():
                try:
                    await self.attempt()
                except Exception as exc:  # the database away, a pool timeout: try again
                    _outages.failed(exc, "lease %s: renewal failed; the term runs out on its own",
                                    self.name)
                if await sleep_or_stop(stopping, self.terms.renew_s):
                    break
        finally:
            await self.release()

    @contextlib.asynccontextmanager
    async def try_hold(self) -> AsyncIterator[bool]:
        """For one run of a job (meshkit's JobLock): whether this caller holds the lease,
        renewed for the body of the `async with` and given up after it."""
        # Two runs asked of this very process share its holder name: the second would be
        # granted as a renewal, so it is refused here (set before the first await).
        if self._running:
            yield False
            return
        self._running = True
        try:
            if not await self.attempt():
                yield False
                return
            stop = asyncio.Event()
            renewer = asyncio.create_task(self.keep(stop), name=f"lease-{self.name}")
            try:
                yield True
            finally:
                stop.set()
                await renewer
        finally:
            self._running = False


class _LeaseStop(asyncio.Event):
    """A loop's stop event that also reads as set while the lease is not held."""

    def __init__(self, lease: Lease, outer: asyncio.Event) -> None:
        super().__init__()
        self.lease, self.outer = lease, outer

    def is_set(self) -> bool:
        return super().is_set() or self.outer.is_set() or not self.lease.held()


def led(lease: Lease, loop: Loop, watch_s: float = 0.2) -> Loop:
    """`loop`, run only while `lease` is held (and the lease kept meanwhile): started on
    taking it, told to stop on losing it or on the service's stop."""

    async def run(stopping: asyncio.Event) -> None:
        keeping = asyncio.Event()
        keeper = asyncio.create_task(lease.keep(keeping), name=f"lease-{lease.name}")
        try:
            while not stopping.is_set():
                if not lease.held():
                    await sleep_or_stop(stopping, watch_s)
                    continue
                if await _one_term(lease, loop, stopping, watch_s):
                    return  # the loop ended of itself (nothing for it to do here)
        finally:
            keeping.set()
            await keeper

    return run


async def _one_term(lease: Lease, loop: Loop, stopping: asyncio.Event, watch_s: float) -> bool:
    """Run `loop` until it ends, the lease is lost, or the service stops; True when it
    ended of itself while the lease was still held."""
    inner = _LeaseStop(lease, stopping)
    task: asyncio.Future[None] = asyncio.ensure_future(loop(inner))
    while not task.done() and not inner.is_set():
        await asyncio.wait({task}, timeout=watch_s)
    ended_itself = task.done() and not inner.is_set()
    inner.set()
    done, _ = await asyncio.wait({task}, timeout=10.0)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    error = task.exception()
    if error is not None:
        raise error
    return ended_itself
