"""The order lock of a payout batch: meshkit.order_locks (one pipeline of SET NX PX per
batch) against redis-py's own `redis.asyncio.lock.Lock` (one object and one round trip
per key), taken one after another or gathered.

    set -a && . .run/devstack.env && set +a && PYTHONPATH=.:gen .venv/bin/python bench/order_lock_batch.py

Needs only REDIS_URL; its keys live under a fresh prefix and are deleted after each round.
Last lines:
    RESULT lock_batch_pipeline_ms X
    RESULT lock_batch_redis_lock_sequential_ms Y
    RESULT lock_batch_redis_lock_gathered_ms Z
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio.lock import Lock

from meshkit.order_locks import OrderLocks
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys


async def main(batch: int, rounds: int) -> None:
    client = open_redis(os.environ["REDIS_URL"])
    keys = Keys(f"lockbench-{uuid.uuid4().hex[:8]}")
    order_ids = [f"o-{i}" for i in range(batch)]
    names = [keys.order_lock(o) for o in order_ids]
    locks = OrderLocks(client, keys, ttl_ms=5000)

    async def pipeline() -> None:
        assert len(await locks.acquire_many(order_ids)) == batch

    async def sequential() -> None:
        for name in names:
            assert await Lock(client, name, timeout=5, blocking=False).acquire()

    async def gathered() -> None:
        assert all(await asyncio.gather(*(Lock(client, n, timeout=5, blocking=False).acquire()
                                          for n in names)))

    async def timed(take: Callable[[], Awaitable[None]]) -> float:
        """Milliseconds per batch, the DEL between rounds not counted."""
        await take()  # warm-up: connections, script loads
        await client.delete(*names)
        total = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            await take()
            total += time.perf_counter() - started
            await client.delete(*names)
        return total / rounds * 1000

    try:
        results = {"pipeline": await timed(pipeline), "redis_lock_sequential": await timed(sequential),
                   "redis_lock_gathered": await timed(gathered)}
    finally:
        await client.delete(*names)
        await client.aclose()
    for name, ms in results.items():
        print(f"RESULT lock_batch_{name}_ms {ms:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="orders per batch (PAYOUT_BATCH_SIZE)")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.batch, args.rounds))
