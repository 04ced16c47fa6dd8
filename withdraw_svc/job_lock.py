"""A PostgreSQL session advisory lock: one holder across every replica."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


def lock_key(name: str) -> int:
    """A stable 64-bit advisory lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class SessionLock:
    def __init__(self, database_url: str, key: int) -> None:
        self.database_url = database_url
        self.key = key

    @asynccontextmanager
    async def try_hold(self) -> AsyncIterator[bool]:
        """Whether this caller holds the lock, for the body of the `async with`. A
        connection of its own: the session lock dies with it, whatever happens to the
        body, and never rides back into a pool with a pooled connection. `database_url` must
        reach PostgreSQL directly: behind PgBouncer in transaction mode the lock would stay on
        whichever server connection ran the statement, held after this connection closed
        (CommonSettings.session_database_url; leases are the way out, branch `replicas`)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            yield bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key))
        finally:
            await conn.close()
