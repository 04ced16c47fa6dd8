#!/usr/bin/env python3
"""ConfirmWithdraw throughput through the mesh (withdraw_svc -> account_svc -> PostgreSQL +
outbox), against pgbench's TPC-B-like transaction on the same PostgreSQL in the same run.

    .venv/bin/python -m bench.confirm_throughput [--clients 32] [--duration 20]
        [--users 2000] [--spawn] [--no-pgbench]

Uses the mesh at WITHDRAW_SVC_ADDR / ACCOUNT_SVC_ADDR / GATEWAY_MOCK_ADDR (default
127.0.0.1:50052/50051/50055). When one of them does not answer (or with --spawn) it starts
gateway_mock, account_svc and withdraw_svc as processes on free ports over a scratch
database, and stops them and drops the database afterwards. Seeds funded users with bound
methods, drives ConfirmWithdraw with --clients concurrent callers, each on its own users
(a real campaign spreads over millions of accounts), then runs pgbench with the same client
count on a scratch database (scale 10) and prints

    RESULT confirm_per_s X
    RESULT confirm_p99_ms Y
    RESULT confirm_vs_pgbench_tpcb Z

Between the two it drives bench/grpc_floor.py, a server that answers ConfirmWithdraw with no
work, with the same clients (--no-floor skips it): the Python gRPC floor on this machine,
and from it the ratio a confirm could reach if it cost one empty call plus one TPC-B
transaction of database work and no application code
(RESULT empty_hop_per_s, RESULT confirm_ceiling_vs_pgbench_tpcb), and confirms/s against
that floor (RESULT confirm_vs_floor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc

from bench import pgstate
from edge.client import UserSessions
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.db import with_database
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools.loadlib.clients import open_channel, serving
from tools.loadlib.meshprocs import mesh_schemas
from tools.loadlib.seeding import TestUser, seed_bench_users
from tools.loadlib.stats import percentiles
from tools.meshctl import free_ports, own_certs

ROOT = Path(__file__).resolve().parent.parent

SERVICES = {"gateway_mock": 50055, "account_svc": 50051, "withdraw_svc": 50052}
AMOUNT_FEN = 100
PGBENCH_CANDIDATES = ("pgbench", "/usr/lib/postgresql/15/bin/pgbench", "/usr/lib/postgresql/16/bin/pgbench")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Mesh:
    addresses: dict[str, str]
    env: dict[str, str]   # where its keys (reward tokens, sessions) come from
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    scratch_db: str = ""
    base_db: str = ""
    log_dir: Path | None = None

    def database_url(self, base_db: str) -> str:
        return with_database(self.base_db, self.scratch_db) if self.scratch_db else base_db

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
        if self.scratch_db:
            conn = await asyncpg.connect(self.base_db)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.scratch_db}" WITH (FORCE)')
            finally:
                await conn.close()


async def running_mesh() -> Mesh | None:
    addresses = {svc: os.environ.get(f"{svc.upper()}_ADDR", f"127.0.0.1:{port}")
                 for svc, port in SERVICES.items()}
    if all(await asyncio.gather(*(serving(a) for a in addresses.values()))):
        return Mesh(addresses, dict(os.environ))
    return None


def launch(svc: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", svc], cwd=ROOT, env={**env, **own_certs(svc, env)},
                                stdout=out, stderr=subprocess.STDOUT)


async def spawn_mesh(base_db: str, redis_url: str) -> Mesh:
    name = f"bench_confirm_{uuid.uuid4().hex[:8]}"
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
    }
    mesh = Mesh({}, env, scratch_db=name, base_db=base_db,
                log_dir=ROOT / ".run" / "bench" / name)
    assert mesh.log_dir is not None
    mesh.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for svc in SERVICES:
            port = free_ports(1)[0]
            env[f"{svc.upper()}_PORT"] = str(port)
            env[f"{svc.upper()}_ADDR"] = f"127.0.0.1:{port}"
            mesh.addresses[svc] = f"127.0.0.1:{port}"
            mesh.procs.append(launch(svc, env, mesh.log_dir / f"{svc}.log"))
            deadline = time.monotonic() + 60
            while not await serving(mesh.addresses[svc]):
                if mesh.procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{svc} did not start; see {mesh.log_dir / (svc + '.log')}")
                await asyncio.sleep(0.2)
            log(f"started {svc} on {mesh.addresses[svc]} (pid {mesh.procs[-1].pid})")
    except BaseException:
        await mesh.stop()
        raise
    return mesh


# --- seeding -------------------------------------------------------------------------------


# --- load ----------------------------------------------------------------------------------


@dataclass
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0


async def drive(address: str, users: list[TestUser], clients: int, duration_s: float,
                warmup_s: float) -> Load:
    channels = [open_channel(address) for _ in range(4)]
    stubs = [withdraw_pb2_grpc.WithdrawServiceStub(c) for c in channels]
    # Each user signed in once, before the clock starts, as the app would be.
    sessions = UserSessions.from_env()
    signed_in = {user.uid: sessions.metadata(user.uid) for user in users}
    load = Load()
    started = time.monotonic()
    measure_from = started + warmup_s
    stop_at = measure_from + duration_s

    async def client(index: int) -> None:
        stub = stubs[index % len(stubs)]
        mine = users[index::clients]
        n = 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            user = mine[n % len(mine)]
            n += 1
            t0 = time.perf_counter()
            try:
                await stub.ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
                    uid=user.uid, request_id=uuid.uuid4().hex, amount_fen=AMOUNT_FEN,
                    method_id=user.method_id), timeout=10, metadata=signed_in[user.uid])
                ok = True
            except grpc.aio.AioRpcError as err:
                ok = False
                code = err.code().name
            if now >= measure_from:
                if ok:
                    load.latencies_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    load.errors[code] += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    load.elapsed_s = time.monotonic() - measure_from
    for c in channels:
        await c.close()
    return load


# --- the floor: the same client against a server that does nothing ---------------------


async def empty_hop(users: list[TestUser], clients: int, duration_s: float, warmup_s: float) -> float:
    """Confirms/s that bench/grpc_floor.py (answers at once, no work) takes from this client."""
    port = free_ports(1)[0]
    # withdraw_svc's own certificate (none under MESH_INSECURE): the client dials the floor
    # exactly as it dials the real withdraw_svc, TLS handshake and all.
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
           **own_certs("withdraw_svc", os.environ)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.grpc_floor", "--port", str(port), cwd=ROOT, env=env)
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not await serving(address):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise SystemExit("bench.grpc_floor did not start")
            await asyncio.sleep(0.2)
        load = await drive(address, users, clients, duration_s, warmup_s)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    return len(load.latencies_ms) / load.elapsed_s if load.elapsed_s else 0.0


# --- pgbench ------------------------------------------------------------------------------


def find_pgbench() -> str:
    for candidate in PGBENCH_CANDIDATES:
        path = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
        if path:
            return path
    raise SystemExit("pgbench not found")


async def pgbench(base_db: str, clients: int, duration_s: float) -> float:
    exe = find_pgbench()
    name = f"bench_pgbench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base_db)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    p = urlsplit(base_db)
    args = ["-h", p.hostname or "127.0.0.1", "-p", str(p.port or 5432), "-U", p.username or "postgres"]
    env = {**os.environ}
    if p.password:
        env["PGPASSWORD"] = p.password
    try:
        init = await asyncio.to_thread(subprocess.run, [exe, *args, "-i", "-s", "10", "-q", name],
                                       env=env, capture_output=True, text=True)
        if init.returncode != 0:
            raise SystemExit(f"pgbench -i failed: {init.stderr[-2000:]}")
        for attempt in range(1, 6):
            run = await asyncio.to_thread(
                subprocess.run,
                [exe, *args, "-c", str(clients), "-j", str(min(clients, 2)),
                 "-T", str(int(duration_s)), name],
                env=env, capture_output=True, text=True)
            # The server's connection slots are shared with whatever else runs on it.
            if run.returncode == 0 or "too many clients" not in run.stderr or attempt == 5:
                break
            log(f"pgbench: PostgreSQL out of connection slots; retrying ({attempt})")
            await asyncio.sleep(5)
        if run.returncode != 0:
            raise SystemExit(f"pgbench failed: {run.stderr[-2000:]}")
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", run.stdout) or \
            re.search(r"tps = ([0-9.]+)", run.stdout)
        if not match:
            raise SystemExit(f"could not read pgbench output:\n{run.stdout}")
        log(run.stdout.strip().splitlines()[-1])
        return float(match.group(1))
    finally:
        conn = await asyncpg.connect(base_db)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


# --- main ---------------------------------------------------------------------------------


async def main() -> None:
    # The benchmark's mesh is a private dev mesh: without SESSION_TOKEN_KEYS its services and
    # its simulated users share the well-known dev session key.
    os.environ.setdefault("MESH_ENV", "dev")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--spawn", action="store_true", help="always start a private mesh")
    parser.add_argument("--no-pgbench", action="store_true")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the empty-server run (the Python gRPC floor)")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="seconds to keep a spawned mesh after the load (for profiling)")
    a = parser.parse_args()
    base_db = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)

    mesh = None if a.spawn else await running_mesh()
    if mesh is None:
        log("starting gateway_mock, account_svc and withdraw_svc (scratch database)")
        mesh = await spawn_mesh(base_db, redis_url)
    else:
        log(f"using the running mesh at {mesh.addresses}")
    try:
        # Enough for every confirm the run can make, with a wide margin.
        per_user = AMOUNT_FEN * max(50, int(3000 * (a.duration + a.warmup) / a.users) + 1)
        t0 = time.monotonic()
        users = await seed_bench_users(mesh.addresses, mesh.env, a.users, per_user, concurrency=32, say=log)
        log(f"seeded {len(users)} users with bound methods and {per_user} fen each "
            f"in {time.monotonic() - t0:.1f}s")
        # A spawned mesh uses the default schema names in its scratch database.
        await pgstate.prepare(mesh.database_url(base_db),
                              mesh_schemas({} if mesh.scratch_db else os.environ).values(), say=log)
        load = await drive(mesh.addresses["withdraw_svc"], users, a.clients, a.duration, a.warmup)
        if a.hold:
            await asyncio.sleep(a.hold)
    finally:
        await mesh.stop()
    hop = 0.0 if a.no_floor else await empty_hop(users, a.clients, a.duration, a.warmup)

    done = len(load.latencies_ms)
    rate = done / load.elapsed_s if load.elapsed_s else 0.0
    spread = percentiles(load.latencies_ms)
    p50, p99 = spread["p50"] or float("nan"), spread["p99"] or float("nan")
    print(f"confirms: {done} in {load.elapsed_s:.1f}s with {a.clients} clients: {rate:.0f}/s, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {dict(load.errors) or 'none'}")
    print(f"RESULT confirm_per_s {rate:.1f}")
    print(f"RESULT confirm_p50_ms {p50:.2f}")
    print(f"RESULT confirm_p99_ms {p99:.2f}")
    if not a.no_pgbench:
        tps = await pgbench(base_db, a.clients, a.duration)
        print(f"pgbench TPC-B-like, scale 10, {a.clients} clients, {a.duration:.0f}s: {tps:.0f} tps")
        print(f"RESULT pgbench_tpcb_tps {tps:.1f}")
        if hop:
            # A confirm that cost one empty gRPC call plus one TPC-B transaction's database
            # work, and nothing else, on these same cores: 1 / (1/hop + 1/tps) per second.
            ceiling = 1 / (1 / hop + 1 / tps)
            print(f"floor: an empty ConfirmWithdraw server takes {hop:.0f}/s from this client "
                  f"({hop / tps:.2f}x pgbench); empty hop + one TPC-B of work would give {ceiling:.0f}/s "
                  f"= {ceiling / tps:.2f}x pgbench, with no application code at all")
            print(f"RESULT empty_hop_per_s {hop:.1f}")
            print(f"RESULT confirm_ceiling_vs_pgbench_tpcb {ceiling / tps:.3f}")
            # The measure: confirms/s against that floor (1.0 = no cost beyond it).
            print(f"RESULT confirm_vs_floor {rate / ceiling:.3f}")
        print(f"RESULT confirm_vs_pgbench_tpcb {rate / tps:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
