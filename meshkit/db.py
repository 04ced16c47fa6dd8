"""PostgreSQL: one pool per process, bound to the service's own schema by a role of its own
(no session state per connection, so it works through PgBouncer in transaction mode); versioned
migrations that run at start and are safe to run twice (and by two replicas at once)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from meshkit.settings import pooler_from_env

log = logging.getLogger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server (scratch databases of tests
    and benchmarks)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


def _quoted(identifier: str) -> str:
    if not identifier.replace("_", "").isalnum():
        raise ValueError(f"bad schema name {identifier!r}")
    return f'"{identifier}"'


def _quoted_name(name: str) -> str:
    """Any identifier (a role name has '@' in it; a database name may have anything)."""
    return '"' + name.replace('"', '""') + '"'


def connect_options(pooler: str | None = None) -> dict[str, Any]:
    """asyncpg options for a connection through `pooler` (default: DATABASE_POOLER).

    Behind PgBouncer in transaction mode (1.18 has no prepared-statement support) each
    transaction, or each statement outside one, may run on another server connection, so a
    named prepared statement made on one is missing on the next: asyncpg's statement cache
    is off (statement_cache_size=0; max_cached_statement_lifetime then has nothing to age).
    Every query is then an unnamed statement, whose Parse, Describe (answered after a Flush,
    not a Sync) and Bind/Execute/Sync PgBouncer keeps on one server connection, since it
    moves a client only after ReadyForQuery. The same holds for executemany (one Sync after
    every Bind) and copy_records_to_table (its column lookup, then COPY). What does NOT hold:
    `conn.prepare()` kept and run later (its unnamed statement is gone by then); no code
    does that."""
    return {"statement_cache_size": 0} if (pooler or pooler_from_env()) != "none" else {}


async def connect(dsn: str, *, pooler: str | None = None, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect with the options DATABASE_POOLER (or `pooler`) needs."""
    return await asyncpg.connect(dsn, **{**connect_options(pooler), **kwargs})


def schema_role(schema: str, database: str) -> str:
    """The PostgreSQL role that reaches `schema` of `database` (<schema>@<database>, or a
    hash of both when that exceeds PostgreSQL's 63 bytes): one per schema and database, so
    its search_path is a setting of the role in that database and nothing else shares it."""
    name = f"{schema}@{database}"
    if len(name.encode()) <= 63:
        return name
    return f"{schema[:20]}@{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def with_user(url: str, user: str) -> str:
    """`url` logging in as `user` (same password, host and database)."""
    p = urlsplit(url)
    host = p.netloc.rpartition("@")[2]
    password = f":{p.password}" if p.password is not None else ""
    return urlunsplit((p.scheme, f"{quote(user, safe='')}{password}@{host}", p.path, p.query, p.fragment))


async def _set_role_search_path(conn: asyncpg.Connection, role: str, database: str, schema: str) -> None:
    wanted = f"search_path={_quoted(schema)}"
    for _ in range(3):
        current = await conn.fetchval(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
            " JOIN pg_database d ON d.oid = s.setdatabase WHERE r.rolname = $1 AND d.datname = $2",
            role, database)
        if current is not None and wanted in current:
            return
        try:
            await conn.execute(f"ALTER ROLE {_quoted_name(role)} IN DATABASE {_quoted_name(database)} "
                               f"SET search_path = {_quoted(schema)}")
            return
        except (asyncpg.UniqueViolationError, asyncpg.InternalServerError):
            continue  # another replica wrote it at the same moment ("tuple concurrently updated")
    raise RuntimeError(f"could not set the search_path of role {role!r}")


async def schema_dsn(dsn: str, schema: str, *, pooler: str | None = None) -> str:
    """`dsn` logging in as the role whose every session starts in `schema` (created here, with
    the schema, when missing; safe for replicas starting together).

    Why a role, not a startup parameter: PgBouncer refuses `search_path` in the startup
    packet (and with ignore_startup_parameters would drop it, leaving every query in the
    wrong schema), and in transaction mode a `SET` lands on one server connection of many.
    A role's own setting (ALTER ROLE .. IN DATABASE .. SET search_path) is applied by
    PostgreSQL itself to every session of that role, whoever opens it: the service directly,
    or PgBouncer, which pools server connections per database and user. Without a pooler it
    is the same mechanism, so both behave the same.

    A DSN whose user already starts in `schema` (a role an operator provisioned per service)
    is returned as it is. Otherwise the role is made a member of the DSN's user: it may do
    what that user may in the database (its schemas and tables), nothing more, and is not a
    superuser even if that user is."""
    conn = await connect(dsn, pooler=pooler)
    try:
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}")
        except asyncpg.UniqueViolationError:
            pass  # another replica created it at the same moment
        if await conn.fetchval("SELECT current_schema() = $1", schema):
            return dsn
        database, user = await conn.fetchrow("SELECT current_database(), current_user")
        role = schema_role(schema, database)
        if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role):
            try:
                await conn.execute(f"CREATE ROLE {_quoted_name(role)} LOGIN IN ROLE {_quoted_name(user)}")
            except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                pass  # another replica created it at the same moment
        await _set_role_search_path(conn, role, database, schema)
    finally:
        await conn.close()
    return with_user(dsn, role)


async def connect_schema(dsn: str, schema: str, *, pooler: str | None = None,
                         **kwargs: Any) -> asyncpg.Connection:
    """One connection working in `schema`, as create_pool's (tests and tools reading a
    service's tables): the schema's role, the pooler's options."""
    return await connect(await schema_dsn(dsn, schema, pooler=pooler), pooler=pooler, **kwargs)


async def schema_roles_of(conn: asyncpg.Connection, database: str) -> list[str]:
    """The roles schema_dsn made for `database` (to drop with a scratch database)."""
    rows = await conn.fetch(
        "SELECT r.rolname FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole"
        " JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1 AND r.rolname LIKE '%@%'",
        database)
    return [r["rolname"] for r in rows]


async def drop_roles(conn: asyncpg.Connection, roles: list[str]) -> None:
    """Drop roles of a dropped scratch database; one still owning something elsewhere stays."""
    for role in roles:
        try:
            await conn.execute(f"DROP ROLE IF EXISTS {_quoted_name(role)}")
        except asyncpg.DependentObjectsStillReferencedError:
            log.warning("role %s still owns objects; left in place", role)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset query (advisory unlock all, CLOSE ALL, UNLISTEN,
    RESET ALL): one round trip per release that undoes nothing here, since no code leaves
    session state on a pooled connection. No SET, LISTEN, temporary table or WITH HOLD
    cursor is used (behind PgBouncer's transaction pooling they would land on a server
    connection another client gets next); the schema comes from the role (schema_dsn);
    migrate() takes a transaction-scoped advisory lock, and single-runner jobs hold lease
    rows (meshkit.leader), not session locks. asyncpg still rolls back a transaction left
    open, and terminates a connection whose release fails. Whoever adds session state to a
    pooled connection must undo it before release, and cannot use it behind PgBouncer at all."""


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10,
                      pooler: str | None = None) -> asyncpg.Pool:
    """A pool whose every connection works in `schema`, directly or through PgBouncer
    (`pooler`, default DATABASE_POOLER)."""
    pooler = pooler or pooler_from_env()
    pool = await asyncpg.create_pool(
        await schema_dsn(dsn, schema, pooler=pooler), min_size=min_size, max_size=max_size,
        server_settings={"application_name": schema},  # a parameter PgBouncer passes on
        reset=_keep_session, **connect_options(pooler),
    )
    assert pool is not None
    # The failure this guards against is silent: queries in another schema's (or public's)
    # tables of the same names. The role setting applies to every session, so one suffices.
    where = await pool.fetchval("SELECT current_schema()")
    if where != schema:
        await pool.close()
        raise RuntimeError(f"a connection for schema {schema!r} works in {where!r}")
    return pool


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"migrate:{schema}".encode()).digest()[:8], "big", signed=True)


async def migrate(pool: asyncpg.Pool, schema: str, service_dir: Path) -> list[str]:
    """Apply shared then service migrations not yet applied; returns the names applied."""
    files = sorted(SHARED_MIGRATIONS.glob("*.sql")) + sorted(service_dir.glob("*.sql"))
    applied: list[str] = []
    # One transaction under a transaction-scoped lock: replicas starting together serialize
    # here instead of racing on DDL, and the lock cannot outlive the transaction and ride
    # back into the pool (which skips the session reset).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in files:
            name = f"{path.parent.parent.name}/{path.name}"
            if name in done:
                continue
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
            log.info("applied migration %s to schema %s", name, schema)
    return applied
