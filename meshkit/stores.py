"""The stores a service holds: its PostgreSQL pool (own schema) and the shared Redis."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio as redis

from meshkit.db import create_pool, migrate
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.settings import CommonSettings


@dataclass
class Stores:
    pool: asyncpg.Pool
    redis: redis.Redis
    keys: Keys

    @classmethod
    async def open(cls, settings: CommonSettings, migrations: Path, *, pool_size: int = 10) -> Stores:
        pool = await create_pool(settings.database_url, settings.db_schema, max_size=pool_size,
                                 pooler=settings.database_pooler)
        await migrate(pool, settings.db_schema, migrations)
        client = open_redis(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        await client.ping()
        return cls(pool, client, Keys(settings.key_prefix))

    async def healthy(self) -> bool:
        try:
            await asyncio.gather(self.pool.fetchval("SELECT 1"), self.redis.ping())
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.close()
