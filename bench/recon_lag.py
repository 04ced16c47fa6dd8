#!/usr/bin/env python3
"""Reconciliation lag under a steady confirm load: for every order placed, the time from its
final transition (the `updated_at` the orchestrator's feed reports for SUCCEEDED/FAILED) to
recon's verdict on it (`checked_at`).

    .venv/bin/python -m bench.recon_lag [--rate 40] [--duration 30]
        [--grace 0.5] [--users 400] [--spawn]

The orders go through the mesh at GATEWAY_MOCK_ADDR / ACCOUNT_SVC_ADDR / WITHDRAW_SVC_ADDR /
PAYOUT_SVC_ADDR (default 127.0.0.1:50055/50051/50052/50053). When one of them does not
answer (or with --spawn) the four are started as processes on free ports over a scratch
database and stopped (database dropped) afterwards.

The verdicts come from a recon_svc process this script starts next to the mesh, with a
scratch schema and RECON_GRACE_S=--grace: the point is the pipeline's own delay (feed poll,
apply, the grace window, the checker's poll), which a production grace of seconds would
dominate. Its feed positions start at the feeds' current ends (read through ReadChanges),
so it judges the orders of this run without replaying the history of a long-running mesh.

Prints the lag percentiles, the feed part of it (final transition -> applied by recon), and
    RESULT recon_lag_p99_ms X
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from bench import pgstate
from edge.client import UserSessions
from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.db import (
    create_pool,
    migrate,
    with_database,
)
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools.loadlib.clients import open_channel, serving
from tools.loadlib.meshprocs import mesh_schemas
from tools.loadlib.seeding import TestUser, seed_bench_users
from tools.meshctl import free_ports, own_certs

ROOT = Path(__file__).resolve().parent.parent

MESH = {"gateway_mock": 50055, "account_svc": 50051, "withdraw_svc": 50052, "payout_svc": 50053}
FEEDS = {"account": "account_svc", "withdraw": "withdraw_svc", "gateway": "gateway_mock"}
AMOUNT_FEN = 100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Procs:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def launch(self, svc: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", svc], cwd=ROOT, env={**env, **own_certs(svc, env)},
                                    stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    async def wait_serving(
        self, svc: str, address: str, proc: subprocess.Popen[bytes], log_path: Path
    ) -> None:
        deadline = time.monotonic() + 60
        while not await serving(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{svc} did not start; see {log_path}")
            await asyncio.sleep(0.2)
        log(f"started {svc} on {address} (pid {proc.pid})")

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


@dataclass
class Mesh:
    addresses: dict[str, str]
    env: dict[str, str]
    database_url: str
    procs: Procs = field(default_factory=Procs)
    scratch_db: str = ""
    base_db: str = ""

    async def stop(self) -> None:
        await self.procs.stop()
        if self.scratch_db:
            conn = await asyncpg.connect(self.base_db)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.scratch_db}" WITH (FORCE)')
            finally:
                await conn.close()


async def running_mesh(base_db: str) -> Mesh | None:
    addresses = {svc: os.environ.get(f"{svc.upper()}_ADDR", f"127.0.0.1:{port}")
                 for svc, port in MESH.items()}
    if all(await asyncio.gather(*(serving(a) for a in addresses.values()))):
        return Mesh(addresses, dict(os.environ), base_db)
    return None


async def spawn_mesh(base_db: str, redis_url: str, run_dir: Path) -> Mesh:
    name = f"bench_reconlag_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base_db)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        "DATABASE_URL": with_database(base_db, name),
        "REDIS_URL": redis_url,
        "MESH_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "REWARD_TOKEN_KEYS": "bench:bench-secret-0123456789abcdef0123456789",
        "REWARD_TOKEN_ACTIVE_KEY": "bench",
        "WITHDRAW_COMPENSATION_ENABLED": "false",
        # A few bench users confirm far more often than a person could: no per-user limits.
        "WITHDRAW_USER_CONFIRMS_PER_MIN": "0",
        "ACCOUNT_USER_CREDITS_PER_MIN": "0",
        # No limit: said explicitly, since a channel without a rate is paused.
        "PAYOUT_DEFAULT_RATES": "bank:unlimited,alipay:unlimited,balance:unlimited",
    }
    mesh = Mesh({}, env, env["DATABASE_URL"], scratch_db=name, base_db=base_db)
    try:
        for svc in MESH:
            port = free_ports(1)[0]
            env[f"{svc.upper()}_PORT"] = str(port)
            env[f"{svc.upper()}_ADDR"] = f"127.0.0.1:{port}"
            env[f"{svc.upper()}_METRICS_PORT"] = "0"
            mesh.addresses[svc] = f"127.0.0.1:{port}"
            log_path = run_dir / f"{svc}.log"
            proc = mesh.procs.launch(svc, env, log_path)
            await mesh.procs.wait_serving(svc, mesh.addresses[svc], proc, log_path)
    except BaseException:
        await mesh.stop()
        raise
    return mesh


# ---- seeding and load ----

async def drive(mesh: Mesh, users: list[TestUser], rate: float, duration_s: float) -> tuple[list[str], int]:
    """Open loop: one ConfirmWithdraw every 1/rate seconds, whatever the answers take."""
    order_ids: list[str] = []
    errors = 0
    sessions = UserSessions.from_env(mesh.env)
    signed_in = {user.uid: sessions.metadata(user.uid) for user in users}
    async with open_channel(mesh.addresses["withdraw_svc"]) as channel:
        stub = withdraw_pb2_grpc.WithdrawServiceStub(channel)

        async def one(n: int) -> None:
            nonlocal errors
            user = users[n % len(users)]
            try:
                reply = await stub.ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
                    uid=user.uid, request_id=uuid.uuid4().hex, amount_fen=AMOUNT_FEN,
                    method_id=user.method_id), timeout=10, metadata=signed_in[user.uid])
                order_ids.append(reply.order.order_id)
            except grpc.aio.AioRpcError:
                errors += 1

        tasks = []
        start = time.monotonic()
        total = int(rate * duration_s)
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return order_ids, errors


# ---- the recon under measurement ----

async def feed_heads(mesh: Mesh) -> dict[str, str]:
    """The cursor at the end of each feed, read through ReadChanges."""
    heads: dict[str, str] = {}
    for feed, svc in FEEDS.items():
        cursor, pages = "", 0
        async with open_channel(mesh.addresses[svc]) as ch:
            stub = feed_pb2_grpc.ChangeFeedServiceStub(ch)
            while True:
                reply = await stub.ReadChanges(
                    feed_pb2.ReadChangesRequest(cursor=cursor, limit=5000), timeout=60)
                cursor = reply.next_cursor or cursor
                pages += 1
                if len(reply.changes) < 5000:
                    break
        heads[feed] = cursor
        log(f"feed {feed}: end at {cursor!r} after {pages} page(s)")
    return heads


async def start_recon(mesh: Mesh, procs: Procs, schema: str, grace: float, run_dir: Path) -> str:
    pool = await create_pool(mesh.database_url, schema, min_size=1, max_size=2)
    try:
        await migrate(pool, schema, ROOT / "recon_svc" / "migrations")
        heads = await feed_heads(mesh)
        await pool.executemany(
            "INSERT INTO feed_positions (feed, cursor) VALUES ($1, $2)"
            " ON CONFLICT (feed) DO UPDATE SET cursor = excluded.cursor",
            list(heads.items()))
    finally:
        await pool.close()
    port = free_ports(1)[0]
    env = {
        **mesh.env,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        "DATABASE_URL": mesh.database_url,
        "RECON_SVC_DB_SCHEMA": schema,
        "RECON_SVC_PORT": str(port),
        "RECON_SVC_METRICS_PORT": "0",
        "RECON_GRACE_S": str(grace),
        "RECON_POLL_MS": "100",
        "RECON_CHECK_MS": "100",
        "RECON_DB_POOL_SIZE": "6",
        **{f"{svc.upper()}_ADDR": addr for svc, addr in mesh.addresses.items()},
    }
    address = f"127.0.0.1:{port}"
    log_path = run_dir / "recon_svc.log"
    proc = procs.launch("recon_svc", env, log_path)
    await procs.wait_serving("recon_svc", address, proc, log_path)
    return address


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def main() -> None:
    # The benchmark's mesh is a private dev mesh: without SESSION_TOKEN_KEYS its services and
    # its simulated users share the well-known dev session key.
    os.environ.setdefault("MESH_ENV", "dev")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=40.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--grace", type=float, default=0.5, help="RECON_GRACE_S of the measured recon")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--spawn", action="store_true", help="start a private mesh even if one runs")
    args = parser.parse_args()

    base_db = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    tag = uuid.uuid4().hex[:8]
    run_dir = ROOT / ".run" / "bench" / f"recon_lag_{tag}"
    mesh = None if args.spawn else await running_mesh(base_db)
    if mesh is None:
        log("starting a private mesh (gateway_mock, account_svc, withdraw_svc, payout_svc)")
        mesh = await spawn_mesh(base_db, redis_url, run_dir)
    else:
        log(f"using the running mesh at {mesh.addresses}")
    recon_procs = Procs()
    schema = f"recon_lag_{tag}"
    try:
        per_user = int(args.rate * args.duration / args.users + 2) * AMOUNT_FEN
        users = await seed_bench_users(mesh.addresses, mesh.env, args.users, per_user, concurrency=16,
                                       say=log)
        log(f"seeded {len(users)} users")
        await start_recon(mesh, recon_procs, schema, args.grace, run_dir)

        await pgstate.prepare(mesh.database_url, [*mesh_schemas(mesh.env).values(), schema], say=log)
        log(f"driving {args.rate:.0f} confirms/s for {args.duration:.0f}s")
        order_ids, errors = await drive(mesh, users, args.rate, args.duration)
        log(f"placed {len(order_ids)} orders ({errors} refused)")

        db = await asyncpg.connect(mesh.database_url, server_settings={"search_path": schema})
        try:
            deadline = time.monotonic() + 120
            while True:
                judged = await db.fetchval(
                    "SELECT count(*) FROM r_orders WHERE order_id = ANY($1) AND checked_at IS NOT NULL",
                    order_ids)
                if judged == len(order_ids) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            rows = await db.fetch(
                """
                SELECT state,
                       extract(epoch FROM checked_at - terminal_at) * 1000 AS lag_ms,
                       extract(epoch FROM seen_terminal_at - terminal_at) * 1000 AS feed_ms
                FROM r_orders WHERE order_id = ANY($1) AND checked_at IS NOT NULL
                """,
                order_ids)
            found = await db.fetchval(
                "SELECT count(*) FROM discrepancies WHERE order_id = ANY($1)", order_ids)
        finally:
            await db.close()
        lags = [float(r["lag_ms"]) for r in rows]
        feed = [float(r["feed_ms"]) for r in rows]
        states: dict[str, int] = {}
        for r in rows:
            states[r["state"]] = states.get(r["state"], 0) + 1
        log(f"judged {len(rows)} of {len(order_ids)} orders {states}; discrepancies on them: {found}")
        if not lags:
            raise SystemExit("no order was judged")
        log(f"lag (final transition -> verdict), grace {args.grace}s: p50 {pct(lags, 0.5):.0f} ms, "
            f"p90 {pct(lags, 0.9):.0f} ms, p99 {pct(lags, 0.99):.0f} ms, max {max(lags):.0f} ms")
        log(f"of which feed (final transition -> applied by recon): p50 {pct(feed, 0.5):.0f} ms, "
            f"p99 {pct(feed, 0.99):.0f} ms")
        if len(rows) < len(order_ids):
            log(f"WARNING: {len(order_ids) - len(rows)} orders were not judged within the wait")
        print(f"RESULT recon_lag_p99_ms {pct(lags, 0.99):.0f}")
    finally:
        await recon_procs.stop()
        try:
            conn = await asyncpg.connect(mesh.database_url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
        finally:
            await mesh.stop()


if __name__ == "__main__":
    asyncio.run(main())
