"""CPU per statement directly and through PgBouncer: what DATABASE_POOLER=pgbouncer costs.

Three runs of the same work, one after the other, on one pool each (a scratch schema, its
role, as create_pool makes them): `direct` (PostgreSQL, asyncpg's statement cache on: how
the mesh runs today), `direct_nocache` (PostgreSQL, cache off: what turning the cache off
costs by itself) and `pgbouncer` (a private PgBouncer from tools/pgbouncer.py in transaction
mode, cache off). The work: CLIENTS tasks, each running point reads by key and a small
two-statement transaction, like the services' statements. CPU is utime + stime from /proc
of this process, of the PostgreSQL backends serving the pool (found in pg_stat_activity by
the role) and of PgBouncer, divided by the statements run.

    python -m bench.pgbouncer_statements [--statements 20000] [--clients 16]

Needs PostgreSQL at DATABASE_URL (PostgreSQL itself, not a pooler) and pgbouncer (as root,
tools/pgbouncer.py installs it). Ends with
`RESULT pgbouncer_statement_cpu_us_<run> <µs>` for each run and
`RESULT pgbouncer_vs_direct_cpu <ratio>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path

import asyncpg

from meshkit import db
from meshkit.settings import DEFAULT_DATABASE_URL
from tools import pgbouncer
from tools.loadlib.cpu import own_cpu_s, read_stat

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run" / "pgbouncer-bench"
ROWS = 1000


async def backend_pids(direct_url: str, role: str) -> list[int]:
    conn = await asyncpg.connect(direct_url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE usename = $1", role)
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


def cpu_of(pids: list[int]) -> float:
    return sum(stat.cpu_s for pid in pids if (stat := read_stat(pid)) is not None)


async def work(pool: asyncpg.Pool, statements: int, clients: int) -> int:
    """Point reads and a read-write transaction (3 statements with BEGIN/COMMIT counted as
    one round trip each); returns the statements run."""
    per_client = statements // clients // 5

    async def client(c: int) -> int:
        done = 0
        for i in range(per_client):
            key = (c * per_client + i) % ROWS
            await pool.fetchval("SELECT note FROM rows WHERE id = $1", key)
            await pool.fetchrow("SELECT id, note FROM rows WHERE id = $1", (key + 1) % ROWS)
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("UPDATE rows SET hits = hits + 1 WHERE id = $1", key)
            done += 5  # two reads; BEGIN, UPDATE, COMMIT
        return done

    return sum(await asyncio.gather(*(client(c) for c in range(clients))))


async def run(name: str, dsn: str, direct_url: str, schema: str, pooler: str, extra_pids: list[int],
              statements: int, clients: int) -> float:
    pool = await db.create_pool(dsn, schema, min_size=clients, max_size=clients, pooler=pooler)
    try:
        await pool.execute("CREATE TABLE IF NOT EXISTS rows (id BIGINT PRIMARY KEY, note TEXT NOT NULL,"
                           " hits BIGINT NOT NULL DEFAULT 0)")
        await pool.execute("INSERT INTO rows (id, note) SELECT g, 'n' || g FROM generate_series(0, $1) g"
                           " ON CONFLICT DO NOTHING", ROWS - 1)
        await work(pool, statements // 10, clients)  # warm: every connection and backend exists
        role = await pool.fetchval("SELECT current_user")
        pids = await backend_pids(direct_url, role) + extra_pids
        cpu0, own0, t0 = cpu_of(pids), own_cpu_s(), time.monotonic()
        done = await work(pool, statements, clients)
        cpu_s = cpu_of(pids) - cpu0 + own_cpu_s() - own0
        wall = time.monotonic() - t0
    finally:
        await pool.close()
    per_us = cpu_s / done * 1e6
    print(f"{name}: {done} statements in {wall:.2f} s ({done / wall:.0f}/s), CPU {cpu_s:.2f} s "
          f"over {len(pids)} server processes + this one: {per_us:.1f} µs per statement")
    return per_us


async def main(statements: int, clients: int) -> None:
    direct_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    schema = f"bench_pgb_{uuid.uuid4().hex[:8]}"
    bouncer_url = await asyncio.to_thread(pgbouncer.start, direct_url, RUN_DIR)
    try:
        bouncer_pid = int((RUN_DIR / "pgbouncer.pid").read_text().strip())
        results = {
            "direct": await run("direct", direct_url, direct_url, schema, "none", [], statements, clients),
            "direct_nocache": await run("direct_nocache", direct_url, direct_url, schema, "pgbouncer", [],
                                        statements, clients),
            "pgbouncer": await run("pgbouncer", bouncer_url, direct_url, schema, "pgbouncer", [bouncer_pid],
                                   statements, clients),
        }
    finally:
        await asyncio.to_thread(pgbouncer.stop, RUN_DIR)
        conn = await asyncpg.connect(direct_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            database = await conn.fetchval("SELECT current_database()")
            await db.drop_roles(conn, [db.schema_role(schema, database)])
        finally:
            await conn.close()
    for name, per_us in results.items():
        print(f"RESULT pgbouncer_statement_cpu_us_{name} {per_us:.1f}")
    print(f"RESULT pgbouncer_vs_direct_cpu {results['pgbouncer'] / results['direct']:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.statements, args.clients))
