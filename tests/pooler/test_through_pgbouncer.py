"""Through the PgBouncer of `make test-pgbouncer` (tools/pgbouncer.py, transaction pooling):
collected only there (tests/conftest.py), since the normal suite must not need pgbouncer.

What asyncpg does with statements works through it with the cache off (meshkit.db.connect_options):
plain queries, executemany, copy_records_to_table, a prepared statement used at once, a
transaction; many clients share few server connections; a startup search_path is refused."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from meshkit import db


async def backends(role: str) -> list[int]:
    """PostgreSQL's own count of the server connections of `role` (asked past PgBouncer: its
    admin console answers only the simple query protocol, which asyncpg's fetch does not use)."""
    conn = await asyncpg.connect(os.environ["DATABASE_DIRECT_URL"])
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE usename = $1", role)
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


@pytest.fixture
async def pool(mesh_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    schema = f"bouncer_{uuid.uuid4().hex[:8]}"
    pool = await db.create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=30)
    await pool.execute("CREATE TABLE rows (id BIGINT PRIMARY KEY, note TEXT NOT NULL)")
    yield pool
    await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await pool.close()


async def test_this_run_goes_through_pgbouncer(
        mesh_env: dict[str, str]) -> None:
    assert os.environ["DATABASE_POOLER"] == "pgbouncer"
    through = await db.connect(mesh_env["DATABASE_URL"])
    try:
        # PostgreSQL sees its client on another port than the one we dialled: PgBouncer's.
        assert await through.fetchval("SELECT inet_server_port()") != urlsplit(mesh_env["DATABASE_URL"]).port
    finally:
        await through.close()


async def test_a_startup_search_path_is_refused_not_ignored(mesh_env: dict[str, str]) -> None:
    with pytest.raises(asyncpg.ProtocolViolationError, match="unsupported startup parameter: search_path"):
        await asyncpg.connect(mesh_env["DATABASE_URL"], statement_cache_size=0,
                              server_settings={"search_path": "withdraw"})


async def test_many_clients_share_few_server_connections_and_statements_still_work(
        pool: asyncpg.Pool) -> None:
    user = await pool.fetchval("SELECT current_user")
    await pool.executemany("INSERT INTO rows (id, note) VALUES ($1, $2)", [(i, f"n{i}") for i in range(200)])
    await pool.copy_records_to_table("rows", records=[(i, f"c{i}") for i in range(200, 400)],
                                     columns=["id", "note"])

    async def client(i: int) -> tuple[int, str]:
        async with pool.acquire() as conn:
            if i % 3 == 0:
                async with conn.transaction():
                    await conn.execute("UPDATE rows SET note = note || '+' WHERE id = $1", i)
                    note = await conn.fetchval("SELECT note FROM rows WHERE id = $1", i)
                    return i, note
            if i % 3 == 1:
                statement = await conn.prepare("SELECT note FROM rows WHERE id = $1")
                return i, await statement.fetchval(i)
            return i, await conn.fetchval("SELECT note FROM rows WHERE id = $1", i)

    # Up to 30 client connections at once against PgBouncer's 10 server connections per pool.
    results = await asyncio.gather(*(client(i) for i in range(300)))
    for i, note in results:
        base = f"n{i}" if i < 200 else f"c{i}"
        assert note == (base + "+" if i % 3 == 0 else base)
    assert await pool.fetchval("SELECT count(*) FROM rows") == 400
    # Transaction pooling: the clients stay connected, the server connections are shared (in
    # session mode each client would hold one of its own).
    assert pool.get_size() >= 20
    assert 1 <= len(await backends(user)) <= 10
