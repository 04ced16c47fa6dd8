"""Runs every check against the mesh and prints the table and the verdict."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TextIO

import asyncpg
import redis.asyncio as redis

from mesh.withdraw.v1 import withdraw_pb2
from meshkit.redis_client import open_redis
from tools.preflight import mesh_checks as mesh
from tools.preflight import secret_checks as secrets
from tools.preflight import store_checks as stores
from tools.preflight.config import Config, UsageError, from_args
from tools.preflight.table import render
from tools.preflight.timing import default_night_end, window_of
from tools.preflight.verdict import Result, apply_waivers, exit_code, fail, final_line


def _night_end(config: Config, gate: withdraw_pb2.GateConfig | None, now: datetime) -> datetime:
    if config.expect.night_end is not None:
        return config.expect.night_end
    try:
        window = window_of(gate.closed_start, gate.closed_end, gate.timezone) if gate else None
    except (ValueError, KeyError):
        window = None
    return default_night_end(window, now)


async def _gate(peers: mesh.Peers, config: Config,
                now: datetime) -> tuple[Result, withdraw_pb2.GateConfig | None]:
    try:
        gate = await mesh.gate_config(peers)
    except mesh.PeerDown as exc:
        return fail("gate", str(exc)), None
    return mesh.judge_gate(gate, config.expect.gate_window, config.expect.release, now), gate


async def _recon(peers: mesh.Peers, config: Config) -> list[Result]:
    try:
        status = await mesh.recon_status(peers)
    except mesh.PeerDown as exc:
        reason = str(exc)
        return [fail("recon-feeds", reason), fail("discrepancies", reason)]
    now = datetime.now(UTC)
    return [mesh.judge_feeds(status, config.feeds, config.expect.feed_lag_s, now),
            mesh.judge_discrepancies(status)]


async def _postgres(config: Config) -> tuple[asyncpg.Connection | None, str]:
    try:
        return await stores.connect(config), ""
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return None, f"PostgreSQL at DATABASE_URL does not answer: {type(exc).__name__}: {exc}"


async def safely(name: str, check: Callable[[], Awaitable[Result]]) -> Result:
    """Any error inside one check is that check's FAIL: a pre-flight that stopped half-way
    must still print every row and a NO-GO line, never a bare traceback."""
    try:
        return await check()
    except mesh.PeerDown as exc:
        return fail(name, str(exc))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return fail(name, f"Redis at REDIS_URL does not answer: {exc}")
    except Exception as exc:
        return fail(name, f"check failed: {type(exc).__name__}: {exc}")


async def _redis_offset(client: redis.Redis) -> float | None:
    try:
        return await stores.redis_offset(client)
    except (redis.RedisError, OSError):
        return None


async def _pg_offset(conn: asyncpg.Connection | None) -> float | None:
    try:
        return await stores.postgres_offset(conn) if conn else None
    except (asyncpg.PostgresError, OSError):
        return None


async def collect(config: Config) -> list[Result]:
    """Every check, in the table's order. A check whose service or store is away FAILs; the
    others still run."""
    now = datetime.now(UTC)
    peers = mesh.Peers(config)
    conn, pg_error = await _postgres(config)
    client = open_redis(config.redis_url, socket_timeout=config.timeout_s,
                                  socket_connect_timeout=config.timeout_s, decode_responses=True)

    async def pg_down() -> Result:
        raise mesh.PeerDown(pg_error)

    try:
        gate_result, gate = await _gate(peers, config, now)
        night_end = _night_end(config, gate, now)
        checks: list[tuple[str, Callable[[], Awaitable[Result]]]] = [
            ("health", lambda: mesh.check_health(peers)),
            ("migrations", (lambda: stores.check_migrations(conn, config)) if conn else pg_down),
            ("rates", lambda: mesh.check_rates(peers)),
            ("capacity", lambda: mesh.check_capacity(peers)),
            ("dlq", lambda: mesh.check_dlq(peers)),
            ("compensation", lambda: mesh.check_compensation(peers)),
            ("four-eyes", lambda: mesh.check_four_eyes(peers)),
        ]
        results = [await safely(name, check) for name, check in checks]
        results.insert(2, gate_result)
        results.extend(await _recon(peers, config))
        results.append(secrets.check_keys(config.token_keys, config.token_active_key))
        results.append(secrets.check_certificates(config.tls, night_end))
        autovacuum = (lambda: stores.check_autovacuum(conn)) if conn else pg_down
        results.append(await safely("autovacuum", autovacuum))
        results.append(await safely("redis-persistence", lambda: stores.check_redis_persistence(
            client, config.expect.redis_persistence)))
        offsets = {"Redis": await _redis_offset(client), "PostgreSQL": await _pg_offset(conn)}
        results.append(stores.judge_clock(offsets, config.expect.clock_offset_ms))
    finally:
        await peers.close()
        await client.aclose()
        if conn is not None:
            await conn.close()
    return apply_waivers(results, config.waived)


async def run(argv: Sequence[str], env: Mapping[str, str], out: TextIO = sys.stdout,
              err: TextIO = sys.stderr) -> int:
    """0 GO, 1 NO-GO, 2 usage error."""
    try:
        config = from_args(argv, env)
    except UsageError as exc:
        print(f"preflight: {exc}", file=err)
        return 2
    results = await collect(config)
    print(render(results), file=out)
    print(final_line(results), file=out)
    return exit_code(results)
