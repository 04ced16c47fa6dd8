"""Checks of PostgreSQL and Redis themselves: migrations of every schema, autovacuum,
Redis persistence as the deployment expects it, and both servers' clocks."""

from __future__ import annotations

import time

import asyncpg
import redis.asyncio as redis

from meshkit import db
from tools.preflight.config import SERVICES, Config, migration_files
from tools.preflight.timing import clock_offset
from tools.preflight.verdict import Result, fail, judged, ok


async def connect(config: Config) -> asyncpg.Connection:
    """Through a pooler too (DATABASE_POOLER: no statement cache); every query names its schema."""
    return await db.connect(config.database_url, timeout=config.timeout_s)


def _schema_problems(service: str, schema: str, applied: set[str] | None, shipped: list[str]) -> list[str]:
    if applied is None:
        return [f"{service} schema {schema} has no schema_migrations table (never migrated)"]
    problems = []
    missing = [name for name in shipped if name not in applied]
    unknown = sorted(applied - set(shipped))
    if missing:
        problems.append(f"{service} schema {schema} misses {', '.join(missing)}")
    if unknown:
        problems.append(f"{service} schema {schema} has {', '.join(unknown)}, which this code does not ship")
    return problems


async def check_migrations(conn: asyncpg.Connection, config: Config) -> Result:
    problems, lines = [], []
    for service in SERVICES:
        schema = config.schemas[service]
        shipped = migration_files(service)
        exists = await conn.fetchval(
            "SELECT to_regclass(format('%I.schema_migrations', $1::text)) IS NOT NULL", schema)
        applied: set[str] | None = None
        if exists:
            rows = await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')
            applied = {r["name"] for r in rows}
        found = _schema_problems(service, schema, applied, shipped)
        problems.extend(found)
        summary = "; ".join(found) if found else f"all {len(shipped)} applied"
        lines.append(f"{service} ({schema}): {summary}")
    return judged("migrations", problems, "\n".join(lines))


async def check_autovacuum(conn: asyncpg.Connection) -> Result:
    value = await conn.fetchval("SHOW autovacuum")
    if value != "on":
        return fail("autovacuum", f"PostgreSQL autovacuum is {value}", f"autovacuum = {value}")
    return ok("autovacuum", "autovacuum = on")


def persistence_mode(appendonly: str, save: str) -> str:
    """none, aof or rdb, from CONFIG GET appendonly / save (AOF wins when both are on: it
    is what Redis loads at start)."""
    if appendonly.strip().lower() == "yes":
        return "aof"
    return "rdb" if save.strip() else "none"


async def check_redis_persistence(client: redis.Redis, expected: str) -> Result:
    appendonly = str((await client.config_get("appendonly")).get("appendonly") or "")
    save = str((await client.config_get("save")).get("save") or "")
    actual = persistence_mode(appendonly, save)
    detail = f"appendonly={appendonly or 'no'} save={save!r}: {actual}, expected {expected}"
    if actual != expected:
        reason = f"Redis persistence is {actual}, expected {expected} (PREFLIGHT_REDIS_PERSISTENCE)"
        return fail("redis-persistence", reason, detail)
    return ok("redis-persistence", detail)


async def redis_offset(client: redis.Redis) -> float:
    before = time.time()
    seconds, micros = await client.time()
    after = time.time()
    return clock_offset(before, seconds + micros / 1e6, after)


async def postgres_offset(conn: asyncpg.Connection) -> float:
    # clock_timestamp(), not now(): now() is the transaction's start, not the moment read.
    before = time.time()
    remote = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    after = time.time()
    return clock_offset(before, float(remote), after)


def judge_clock(offsets: dict[str, float | None], limit_ms: float) -> Result:
    """offsets: server name -> its clock minus ours in seconds (None: it did not answer)."""
    problems, lines = [], []
    for name, offset in offsets.items():
        if offset is None:
            lines.append(f"{name}: no answer")
            problems.append(f"{name} did not answer")
            continue
        offset_ms = offset * 1000.0
        lines.append(f"{name} {offset_ms:+.1f} ms")
        if abs(offset_ms) >= limit_ms:
            problems.append(f"{name} clock is {offset_ms:+.0f} ms from this host's (limit {limit_ms:g} ms)")
    return judged("clock", problems, ", ".join(lines))
