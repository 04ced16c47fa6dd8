"""meshkit.leader against real PostgreSQL: one holder of a lease at a time; a holder that
stops renewing (hung, or cut off from the database) loses it within ttl_s and another
replica takes it within 5 s; a clean stop hands it over at the next try; a led loop runs
only while its lease is held and stops within one batch of losing it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from meshkit.db import create_pool, migrate
from meshkit.leader import Lease, LeaseStore, led
from meshkit.leases import LeaseTerms
from tests.waiting import eventually

TAKEOVER_BOUND_S = 5.0


@pytest.fixture
async def store(mesh_env: dict[str, str], tmp_path: Path) -> AsyncIterator[LeaseStore]:
    schema = f"leases_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=4)
    await migrate(pool, schema, tmp_path)  # the shared migrations only: the leases table
    yield LeaseStore(pool)
    await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await pool.close()


async def test_one_holder_at_a_time(store: LeaseStore) -> None:
    a, b = Lease(store, "job", "a"), Lease(store, "job", "b")
    assert await a.attempt()
    assert not await b.attempt()
    assert await a.attempt()  # a renewal keeps the term and the epoch
    assert a.epoch == 1 and a.held() and not b.held()
    assert await store.holder("job") == "a"
    # Another job is another lease.
    assert await Lease(store, "other", "b").attempt()


async def test_a_holder_that_stops_renewing_is_taken_over_within_5s(store: LeaseStore) -> None:
    a, b = Lease(store, "job", "a"), Lease(store, "job", "b")
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    keep_a = asyncio.create_task(a.keep(stop_a))
    await eventually(a.held, what="a holds the lease")
    keep_b = asyncio.create_task(b.keep(stop_b))
    # a hangs: its renewals stop, and it gives nothing up (as SIGKILL or a cut link would).
    keep_a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await keep_a
    hung_at = time.monotonic()
    # Cancelling ran keep's release: put the row back as a hung holder leaves it.
    await store.pool.execute("UPDATE leases SET holder = 'a', expires_at = now() + interval '3 seconds'")
    a.tenure.granted(hung_at)
    await eventually(b.held, timeout=TAKEOVER_BOUND_S, what="b takes the lease over")
    assert await store.holder("job") == "b"
    assert b.epoch == 2
    # a, waking up, finds its term over without asking anyone.
    assert not a.held()
    stop_b.set()
    await keep_b


async def test_a_clean_stop_hands_over_at_once(store: LeaseStore) -> None:
    terms = LeaseTerms(ttl_s=30.0, renew_s=0.2)
    a, b = Lease(store, "job", "a", terms), Lease(store, "job", "b", terms)
    assert await a.attempt()
    stop_b = asyncio.Event()
    keep_b = asyncio.create_task(b.keep(stop_b))
    await a.release()
    # Far sooner than the 30 s term: the row was given up.
    await eventually(b.held, timeout=TAKEOVER_BOUND_S, what="b takes the released lease")
    stop_b.set()
    await keep_b
    assert await store.holder("job") is None  # b released it on its stop too


async def test_a_led_loop_runs_only_on_the_holder_and_stops_on_losing_it(store: LeaseStore) -> None:
    batches: dict[str, int] = {"a": 0, "b": 0}

    def job(name: str, lease: Lease) -> object:
        async def loop(stopping: asyncio.Event) -> None:
            while not stopping.is_set():
                # Fencing: the lease is held before every batch the loop does.
                assert lease.held()
                batches[name] += 1
                await asyncio.sleep(0.05)
        return loop

    a, b = Lease(store, "job", "a"), Lease(store, "job", "b")
    stop = asyncio.Event()
    run_a = asyncio.create_task(led(a, job("a", a))(stop))  # type: ignore[arg-type]
    await eventually(lambda: batches["a"] > 3, what="a's loop runs")
    run_b = asyncio.create_task(led(b, job("b", b))(stop))  # type: ignore[arg-type]
    await eventually(lambda: batches["a"] > 20, what="a's loop keeps running")
    assert batches["b"] == 0
    # a loses its lease (another holder forced in the row, as if a's term had expired).
    await store.pool.execute("UPDATE leases SET holder = 'b', expires_at = now() + interval '3 seconds'")
    await eventually(lambda: not a.held(), timeout=TAKEOVER_BOUND_S, what="a sees it lost the lease")
    await eventually(lambda: batches["b"] > 3, timeout=TAKEOVER_BOUND_S, what="b's loop runs")
    a_after = batches["a"]
    await eventually(lambda: batches["b"] > 20, what="b's loop keeps running")
    assert batches["a"] == a_after
    stop.set()
    await asyncio.gather(run_a, run_b)


async def test_a_database_outage_ends_the_term(store: LeaseStore, mesh_env: dict[str, str]) -> None:
    """A holder whose renewals fail stops acting when its term ends (its own clock)."""
    terms = LeaseTerms(ttl_s=1.0, renew_s=0.2)
    broken = await asyncpg.create_pool(mesh_env["DATABASE_URL"], min_size=1, max_size=1)
    assert broken is not None
    lease = Lease(LeaseStore(broken), "job", "a", terms)
    await broken.execute("CREATE TEMP TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT, "
                         "expires_at TIMESTAMPTZ, epoch BIGINT NOT NULL DEFAULT 1)")
    assert await lease.attempt()
    await broken.close()  # every renewal now fails
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop))
    await eventually(lambda: not lease.held(), timeout=3.0, what="the term runs out")
    stop.set()
    await keeper
