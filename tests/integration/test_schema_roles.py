"""No session state per connection (meshkit.db.schema_dsn): each service's schema comes from
a role of its own, so a pool works the same directly and behind PgBouncer in transaction mode
(make test-pgbouncer runs this file through one too)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from meshkit import db
from tests.harness import create_database, drop_database

# Where the session's search_path came from: "database user" is ALTER ROLE .. IN DATABASE ..
# SET; a startup parameter would say "client", a SET "session".
SOURCE = "SELECT source FROM pg_settings WHERE name = 'search_path'"


async def test_two_services_pools_in_one_database_each_see_only_their_own_schema(
        mesh_env: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    schemas = [f"roles_a{tag}", f"roles_b{tag}"]
    pools = [await db.create_pool(mesh_env["DATABASE_URL"], s, min_size=1, max_size=3) for s in schemas]
    try:
        for schema, pool in zip(schemas, pools, strict=True):
            # The same unqualified name in both schemas: only the search_path tells them apart.
            await pool.execute("CREATE TABLE items (owner TEXT NOT NULL)")
            await pool.executemany("INSERT INTO items (owner) VALUES ($1)", [(schema,), (schema,)])

        async def seen(pool: asyncpg.Pool) -> tuple[str, str, list[str]]:
            row = await pool.fetchrow("SELECT current_schema() AS s, current_user AS u")
            owners = [r["owner"] for r in await pool.fetch("SELECT owner FROM items")]
            return row["s"], row["u"], owners

        # Far more calls than connections, interleaved: every statement may land on another
        # connection (behind PgBouncer, on another server connection), and none may leak.
        results = await asyncio.gather(*(seen(pools[i % 2]) for i in range(40)))
        # Nothing in the session set it (no startup parameter, no SET): the role's setting did.
        assert {await p.fetchval(SOURCE) for p in pools} == {"database user"}
        for i, (schema_seen, user, owners) in enumerate(results):
            mine = schemas[i % 2]
            assert (schema_seen, owners) == (mine, [mine, mine])
            assert user == db.schema_role(mine, mesh_env["DATABASE_URL"].rsplit("/", 1)[1])
    finally:
        for schema, pool in zip(schemas, pools, strict=True):
            await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await pool.close()


async def test_the_schema_comes_from_the_role_and_survives_a_session_reset(mesh_env: dict[str, str]) -> None:
    schema = f"roles_r{uuid.uuid4().hex[:8]}"
    dsn = await db.schema_dsn(mesh_env["DATABASE_URL"], schema)
    # A plain connection of the role, no startup parameter: PostgreSQL starts it in the schema.
    # (No statement cache: DISCARD ALL below drops prepared statements too.)
    conn = await db.connect(dsn, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_schema()") == schema
        # PostgreSQL says where the value came from: the role's setting in this database.
        assert await conn.fetchval(SOURCE) == "database user"
        # Not session state: what RESET and DISCARD ALL go back to is the role's own setting.
        await conn.execute("RESET search_path")
        await conn.execute("DISCARD ALL")
        assert await conn.fetchval("SELECT current_schema()") == schema
        await conn.execute(f'DROP SCHEMA "{schema}"')
    finally:
        await conn.close()


async def test_replicas_making_the_same_schema_role_at_once_all_get_it(mesh_env: dict[str, str]) -> None:
    schema = f"roles_c{uuid.uuid4().hex[:8]}"
    pools = await asyncio.gather(*(db.create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=1)
                                   for _ in range(4)))
    try:
        assert [await p.fetchval("SELECT current_schema()") for p in pools] == [schema] * 4
    finally:
        await pools[0].execute(f'DROP SCHEMA "{schema}"')
        for pool in pools:
            await pool.close()


async def test_dropping_a_scratch_database_drops_its_schema_roles(mesh_env: dict[str, str]) -> None:
    base = mesh_env["DATABASE_URL"]
    scratch = await create_database(base)
    pool = await db.create_pool(scratch, "roles_scratch", min_size=1, max_size=1)
    role = await pool.fetchval("SELECT current_user")
    await pool.close()
    assert role == db.schema_role("roles_scratch", scratch.rsplit("/", 1)[1])
    await drop_database(base, scratch)
    conn = await db.connect(base)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role) == 0
    finally:
        await conn.close()
