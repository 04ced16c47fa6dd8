"""PostgreSQL: one pool per process, bound to the service's own schema; versioned
migrations that run at start and are safe to run twice (and by two replicas at once)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset query (advisory unlock all, CLOSE ALL, UNLISTEN,
    RESET ALL): one round trip per release that undoes nothing here, since no code leaves
    session state on a pooled connection. No SET, LISTEN or WITH HOLD cursor is used;
    migrate() takes a transaction-scoped advisory lock, and single-runner jobs hold lease
    rows (meshkit.leader), not session locks. asyncpg still
    rolls back a transaction left open, and terminates a connection whose release fails.
    Whoever adds session state to a pooled connection must undo it before release."""


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}")
    except asyncpg.UniqueViolationError:
        pass  # another replica created it at the same moment
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size,
        server_settings={"search_path": schema, "application_name": schema},
        reset=_keep_session,
    )
    assert pool is not None
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
