"""meshkit.changefeed against real PostgreSQL: pages follow transaction order numerically,
and the ledger's feed (its entries, through a view) carries every entry once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from meshkit import changefeed
from meshkit.db import create_pool, migrate
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def pool(mesh_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    schema = f"feed_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=2)
    await migrate(pool, schema, ROOT / "account_svc" / "migrations")
    try:
        yield pool
    finally:
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


async def horizon_past(pool: asyncpg.Pool, xid: int, timeout_s: float = 30.0) -> None:
    """Wait (bounded) until transaction `xid` is below every snapshot's horizon."""
    async def horizon() -> int:
        return int(await pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
    await eventually(horizon, lambda xmin: xmin > xid, timeout=timeout_s, interval=0.1,
                     what=f"xid {xid} to fall below the snapshot horizon")


async def _power_of_ten_below_horizon(pool: asyncpg.Pool) -> int:
    """The largest power of ten P with P + 1 below the snapshot horizon, so that xids
    P-2 .. P+1 look long committed. A new cluster (fresh CI machine, the private server
    `make up` starts) is at a few hundred transactions, an old one at millions: the test
    must prove the same thing on both."""
    horizon = int(await pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
    power = 10
    while power * 10 + 1 < horizon:
        power *= 10
    assert power + 1 < horizon, f"cluster too young for the test: horizon {horizon}"
    return power


async def test_pages_follow_xids_as_numbers_not_text(pool: asyncpg.Pool) -> None:
    # Transaction ids that cross a power of ten: as text "100" < "101" < "98" < "99".
    # Explicit old xids (below every running transaction) stand in for long-committed writers.
    power = await _power_of_ten_below_horizon(pool)
    planted = ((power - 2, "a"), (power - 1, "b"), (power, "c"), (power + 1, "d"))
    assert sorted(str(x) for x, _ in planted) != [str(x) for x, _ in planted]  # text order differs
    for xid, key in planted:
        await pool.execute(
            "INSERT INTO changes (xid, kind, key, payload) VALUES ($1::text::xid8, 'k', $2, '{}')",
            str(xid), key,
        )
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page, cursor = await changefeed.read(pool, cursor, 1)
        seen += [c.key for c in page]
        if not page:
            break
    assert seen == ["a", "b", "c", "d"]
    everything, _ = await changefeed.read(pool, "", 100)
    assert [c.key for c in everything] == ["a", "b", "c", "d"]


async def test_ledger_feed_is_its_entries_once_each(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO entries (uid, kind, amount, reward_id, source, balance_after) "
        "SELECT 7, 'CREDIT', 10, 'r-' || g, 'red_packet', 10 * g FROM generate_series(1, 25) g"
    )
    await pool.execute(
        "INSERT INTO entries (uid, kind, amount, order_id, balance_after) VALUES (7, 'DEBIT', 30, 'o-1', 220)"
    )
    # The feed shows a transaction once every older one has ended: a transaction running
    # elsewhere on the cluster (another test, a bench) holds it back a while.
    written = int(await pool.fetchval("SELECT max(xid)::text FROM entries"))
    await horizon_past(pool, written)
    read: list[changefeed.Change] = []
    cursor = ""
    while True:
        page, cursor = await changefeed.read(pool, cursor, 7, "entry_changes")
        if not page:
            break
        read += page
    ids = [int(c.payload["entry_id"]) for c in read]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == 26
    debit = read[-1]
    assert (debit.kind, debit.key) == ("entry", "o-1")
    assert debit.payload["kind"] == "DEBIT" and debit.payload["amount_fen"] == 30
    assert debit.payload["balance_after_fen"] == 220 and debit.payload["uid"] == 7
    assert read[0].key == "r-1" and read[0].payload["reward_id"] == "r-1"
    # Nothing goes to the generic table any more.
    assert await pool.fetchval("SELECT count(*) FROM changes") == 0
