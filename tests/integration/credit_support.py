"""What the bulk-credit integration tests share: account_svc's schema as a pool, and a Redis
namespace of the test's own for the partitioned ingest streams. Test modules import the
fixtures by name (pytest finds them in the module's namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from account_svc.consumer import BulkCreditor
from account_svc.streams import partitions_of
from meshkit.db import create_pool, migrate
from meshkit.redis_keys import Keys
from meshkit.settings import DEFAULT_DATABASE_URL

PARTITIONS = 4
MIGRATIONS = Path(__file__).resolve().parents[2] / "account_svc" / "migrations"


@pytest.fixture(scope="module")
async def pool(mesh_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    schema = os.environ.get("ACCOUNT_SVC_DB_SCHEMA") or "account"
    pool = await create_pool(mesh_env["DATABASE_URL"] or DEFAULT_DATABASE_URL, schema, min_size=1, max_size=8)
    await migrate(pool, schema, MIGRATIONS)
    yield pool
    await pool.close()


@pytest.fixture
async def keys(redis_client: redis.Redis, mesh_env: dict[str, str]) -> AsyncIterator[Keys]:
    """A namespace of this test's own: its consumers are the only ones of these streams."""
    own = Keys(f"{mesh_env['MESH_KEY_PREFIX']}-{uuid.uuid4().hex[:6]}")
    yield own
    streams = [k for p in partitions_of(own, PARTITIONS) for k in (p.stream, p.rejected)]
    await redis_client.delete(*streams, own.rewards_ingest(), own.rewards_rejected())


@contextlib.asynccontextmanager
async def running(creditor: BulkCreditor) -> AsyncIterator[asyncio.Task[None]]:
    """The creditor's loop for the body of the `async with`, stopped (and awaited) after."""
    stopping = asyncio.Event()
    task = asyncio.create_task(creditor.run(stopping))
    try:
        yield task
    finally:
        stopping.set()
        if not task.done():
            await asyncio.wait_for(task, timeout=15)
