"""Scale-out: confirms/s and payout drain with 1 and with 2 replicas of every service,
side by side in one run, interleaved (1, 2, 1, 2, ...).

    .venv/bin/python -m bench.scale_out [--rounds 2] [--duration 15] [--clients 32] [--users 400]

Two private meshes, started by tools/meshctl.py as `make up` and `make up REPLICAS=2` start
theirs (the second: ten processes, replica k at port + 2000*k, every peer dialling both
replicas round robin), on free ports, each in a scratch database of its own with its own
Redis key prefix. The default mesh (if one runs) is left alone: other people measure on
this box. Each round, for each mesh in turn:

1. confirm: every channel paused, ConfirmWithdraw driven for --duration by --clients callers
   (bench.confirm_throughput.drive) through the mesh's withdraw_svc address list;
2. drain: once withdraw_svc's relays have put every PAYOUT job on the streams, every channel
   is opened without a limit (SetChannelRate, four-eyes) and the time until every order of
   the round is SUCCEEDED gives payouts/s through payout_svc's replicas and the gateway.

CPU of each phase from /proc (utime + stime): the mesh's service processes (every replica),
its PostgreSQL backends (by application name) and Redis (shared with whatever else runs).

    RESULT replicas1_confirm_per_s / replicas2_confirm_per_s / replicas2_vs_1_confirm
    RESULT replicas1_drain_per_s / replicas2_drain_per_s / replicas2_vs_1_drain

On a 2-core box the ratios tell whether a second replica of everything adds contention
(below 1: it costs more than it brings), not capacity: ten processes share the same two
cores as five, with PostgreSQL and Redis. Capacity comes from cores a replica can have
to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import redis.asyncio as redis

from bench.confirm_throughput import AMOUNT_FEN, drive
from bench.payout_drain import say
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from meshkit.db import with_database
from meshkit.pki import CertDir
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools import certs as certs_tool
from tools import meshctl
from tools.loadlib import four_eyes
from tools.loadlib.clients import open_channel
from tools.loadlib.cpu import CpuWindow
from tools.loadlib.meshprocs import PG_PREFIX, REDIS, MeshProcesses
from tools.loadlib.seeding import DEFAULT_CHANNELS, TestUser, seed_bench_users
from tools.loadlib.stats import percentiles

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
PAUSED = ",".join(f"{c}:0" for c in DEFAULT_CHANNELS)


@dataclass
class Phase:
    count: int
    seconds: float
    cpu: dict[str, float]
    p99_ms: float = 0.0

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def cpu_ms_per_item(self) -> float:
        return 1000.0 * sum(self.cpu.values()) / self.count if self.count else float("nan")


@dataclass
class ScaleMesh:
    replicas: int
    env: dict[str, str]
    layout: meshctl.Layout
    base_db: str
    database: str
    users: list[TestUser] = field(default_factory=list)
    confirms: list[Phase] = field(default_factory=list)
    drains: list[Phase] = field(default_factory=list)

    def address(self, service: str) -> str:
        upper = service.upper()
        return self.env[f"{upper}_ADDRS"] if self.replicas > 1 else self.env[f"{upper}_ADDR"]

    def addresses(self) -> dict[str, str]:
        return {s: self.address(s) for s in meshctl.SERVICES}

    def tool_env(self) -> dict[str, str]:
        """The mesh's env with each <SVC>_ADDR the whole list, as the tools take it."""
        return {**self.env, **{f"{s.upper()}_ADDR": a for s, a in self.addresses().items()}}

    def pids(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for service in meshctl.SERVICES:
            for instance in meshctl.instances(service, self.layout):
                pid = meshctl.running_pid(instance, self.layout)
                if pid is not None:
                    found[pid] = service
        return found


async def create_mesh(replicas: int, base_db: str, redis_url: str, shared: Mapping[str, str]) -> ScaleMesh:
    run = uuid.uuid4().hex[:8]
    database = f"bench_scale_{run}_r{replicas}"
    conn = await asyncpg.connect(base_db)
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    env = {
        **os.environ, **shared,
        "DATABASE_URL": with_database(base_db, database),
        "REDIS_URL": redis_url,
        "MESH_KEY_PREFIX": f"bench-scale-{run}",
        "MESH_SHUTDOWN_GRACE_S": "5",
        "WITHDRAW_COMPENSATION_ENABLED": "false",
        "WITHDRAW_USER_CONFIRMS_PER_MIN": "0",
        "ACCOUNT_USER_CREDITS_PER_MIN": "0",
        "WITHDRAW_RELAY_BATCH": "1000",
        # Admission sheds above 16 calls in flight per replica: two replicas would admit twice
        # as many, and the ratio would measure the limit, not the processes.
        "MESH_ADMISSION_ENABLED": "false",
        # Every channel paused at start: the confirm phase piles the jobs up for the drain.
        "PAYOUT_DEFAULT_RATES": PAUSED,
        # Every payout_svc replica sees an opening within 0.2 s of the one that was told.
        "PAYOUT_RATE_REFRESH_S": "0.2",
        # The same connections per mesh whatever the replicas: PostgreSQL's 100 are shared.
        **{f"{name}_DB_POOL_SIZE": str(max(2, 8 // replicas))
           for name in ("GATEWAY", "ACCOUNT", "WITHDRAW", "RECON", "PAYOUT")},
    }
    meshctl.on_free_replica_ports(env, meshctl.SERVICES, replicas)
    for service in meshctl.SERVICES:
        env[f"{service.upper()}_METRICS_PORT"] = "0"
    layout = meshctl.Layout(ROOT / ".run" / f"bench-scale-{run}-r{replicas}")
    mesh = ScaleMesh(replicas, meshctl.service_env(env, replicas), layout, base_db, database)
    say(f"starting the {replicas}-replica mesh (database {database}, logs in {layout.run_dir})")
    try:
        await asyncio.to_thread(meshctl.up, env, layout, meshctl.SERVICES, 60.0, replicas)
    except meshctl.MeshError:
        await stop_mesh(mesh)
        raise
    return mesh


async def stop_mesh(mesh: ScaleMesh) -> None:
    await asyncio.to_thread(meshctl.down, mesh.layout, meshctl.SERVICES, 8.0)
    client = redis.Redis.from_url(mesh.env["REDIS_URL"])
    try:
        async for key in client.scan_iter(match=f"{mesh.env['MESH_KEY_PREFIX']}:*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()
    conn = await asyncpg.connect(mesh.base_db)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{mesh.database}" WITH (FORCE)')
    finally:
        await conn.close()


async def set_rates(mesh: ScaleMesh, *, unlimited: bool) -> None:
    """Every channel opened without a limit, or all but closed (SetChannelRate refuses 0:
    0.001/s, so at most one payout of the next round's backlog goes out early)."""
    env = mesh.tool_env()
    async with open_channel(mesh.address("payout_svc"), env=env) as channel:
        hands = four_eyes.header_hands(payout_pb2_grpc.PayoutAdminServiceStub(channel))
        for name in DEFAULT_CHANNELS:
            rate = 0.0 if unlimited else 0.001
            request = payout_pb2.SetChannelRateRequest(channel=name, rate_per_second=rate,
                                                       unlimited=unlimited)
            await four_eyes.set_rate(hands, request, reason="scale-out bench")


async def cpu_groups(procs: MeshProcesses, mesh: ScaleMesh) -> dict[int, str]:
    """pid -> group: the mesh's services (replicas summed), its PostgreSQL backends, Redis."""
    pids = await procs.discover()
    keep = {pid: group for pid, group in pids.items()
            if group == REDIS or (group.startswith(PG_PREFIX) and group != f"{PG_PREFIX}other-databases")}
    return {**keep, **mesh.pids()}


async def measured(procs: MeshProcesses, mesh: ScaleMesh,
                   work: Awaitable[T]) -> tuple[T, dict[str, float], float]:
    """What `work` returned, the CPU seconds of each group meanwhile, and the seconds it took."""
    window = CpuWindow()
    window.start(await cpu_groups(procs, mesh))
    started = time.monotonic()
    result = await work
    seconds = time.monotonic() - started
    window.stop(await cpu_groups(procs, mesh))
    return result, window.by_group(), seconds


async def scalar(pool: asyncpg.Pool, sql: str) -> int:
    return int(await pool.fetchval(sql))


async def wait_for(pool: asyncpg.Pool, sql: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while (left := await scalar(pool, sql)) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {left} left after {timeout:.0f}s")
        await asyncio.sleep(0.05)


OPEN_ORDERS = "SELECT count(*) FROM orders WHERE state NOT IN ('SUCCEEDED', 'FAILED')"
UNPUBLISHED = ("SELECT count(*) FROM outbox WHERE kind = 'PAYOUT' AND published_at IS NULL "
               "AND done_at IS NULL")


async def one_round(mesh: ScaleMesh, args: argparse.Namespace) -> None:
    procs = await MeshProcesses.find(mesh.env, mesh.env["DATABASE_URL"], mesh.env["REDIS_URL"], mesh.layout)
    pool = await asyncpg.create_pool(mesh.env["DATABASE_URL"], min_size=1, max_size=2,
                                     server_settings={"search_path": mesh.env.get("WITHDRAW_SVC_DB_SCHEMA")
                                                      or "withdraw"})
    assert pool is not None
    try:
        before = await scalar(pool, "SELECT count(*) FROM orders")
        load, cpu, _ = await measured(procs, mesh, drive(
            mesh.address("withdraw_svc"), mesh.users, args.clients, args.duration, args.warmup))
        done = len(load.latencies_ms)
        p99 = percentiles(load.latencies_ms)["p99"] or float("nan")
        # The CPU window spans the warm-up too: per confirm, it is divided by all of them.
        orders = await scalar(pool, "SELECT count(*) FROM orders") - before
        confirm = Phase(done, load.elapsed_s, {g: c * done / max(1, orders) for g, c in cpu.items()}, p99)
        mesh.confirms.append(confirm)
        errors = dict(load.errors) or "none"
        say(f"  {mesh.replicas} replica(s): {confirm.per_s:.0f} confirms/s, p99 {p99:.0f} ms, "
            f"errors {errors}")
        await wait_for(pool, UNPUBLISHED, 120, "PAYOUT jobs not on the streams")
        waiting = await scalar(pool, OPEN_ORDERS)

        async def drain() -> None:
            await set_rates(mesh, unlimited=True)
            await wait_for(pool, OPEN_ORDERS, 600, "orders not settled")
        _, cpu, seconds = await measured(procs, mesh, drain())
        await set_rates(mesh, unlimited=False)
        failed = await scalar(pool, "SELECT count(*) FROM orders WHERE state = 'FAILED'")
        phase = Phase(waiting, seconds, cpu)
        mesh.drains.append(phase)
        say(f"  {mesh.replicas} replica(s): drained {waiting} payouts in {seconds:.1f}s = {phase.per_s:.0f}/s"
            f" ({failed} orders FAILED in all)")
    finally:
        await pool.close()
        await procs.close()


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def cpu_line(phases: list[Phase]) -> str:
    groups: dict[str, float] = {}
    count = sum(p.count for p in phases)
    for phase in phases:
        for group, used in phase.cpu.items():
            groups[group] = groups.get(group, 0.0) + used
    parts = [f"{g} {1000 * used / count:.2f}"
             for g, used in sorted(groups.items(), key=lambda kv: -kv[1]) if used / max(1, count) > 1e-5]
    return f"{1000 * sum(groups.values()) / max(1, count):.2f} ms per item ({', '.join(parts)})"


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("MESH_ENV", "dev")
    certs_tool.ensure(CertDir.from_env(os.environ))
    shared = {
        "REWARD_TOKEN_KEYS": f"bench:{secrets.token_hex(16)}",
        "REWARD_TOKEN_ACTIVE_KEY": "bench",
        "SESSION_TOKEN_KEYS": f"bench:{secrets.token_hex(32)}",
    }
    # drive() signs the users' sessions from this process's environment.
    os.environ.update(shared)
    base_db = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    meshes: list[ScaleMesh] = []
    try:
        for replicas in (1, 2):
            mesh = await create_mesh(replicas, base_db, redis_url, shared)
            meshes.append(mesh)
            per_user = AMOUNT_FEN * 400
            mesh.users = await seed_bench_users(mesh.addresses(), mesh.tool_env(), args.users, per_user,
                                                concurrency=16, say=say)
        load_before = os.getloadavg()
        for n in range(args.rounds):
            say(f"round {n + 1} of {args.rounds} (load average {os.getloadavg()[0]:.1f})")
            for mesh in meshes if n % 2 == 0 else reversed(meshes):
                await one_round(mesh, args)
        load_after = os.getloadavg()
    finally:
        for mesh in meshes:
            await stop_mesh(mesh)
    one, two = meshes
    print()
    for mesh in meshes:
        rates = [p.per_s for p in mesh.confirms]
        drains = [p.per_s for p in mesh.drains]
        print(f"{mesh.replicas} replica(s) of each service: confirms/s {' '.join(f'{r:.0f}' for r in rates)}"
              f" (mean {mean(rates):.1f}, p99 ms {' '.join(f'{p.p99_ms:.0f}' for p in mesh.confirms)}); "
              f"drain payouts/s {' '.join(f'{r:.0f}' for r in drains)} (mean {mean(drains):.1f})")
        print(f"  CPU per confirm: {cpu_line(mesh.confirms)}")
        print(f"  CPU per payout:  {cpu_line(mesh.drains)}")
    print(f"load average before {load_before[0]:.1f}/{load_before[1]:.1f}, after {load_after[0]:.1f}/"
          f"{load_after[1]:.1f} on {os.cpu_count()} cores (shared box)")
    print("On 2 cores these ratios tell contention, not capacity: the second replica of every "
          "service shares the same cores as the first, with PostgreSQL and Redis.")
    confirm_ratio = mean([p.per_s for p in two.confirms]) / mean([p.per_s for p in one.confirms])
    drain_ratio = mean([p.per_s for p in two.drains]) / mean([p.per_s for p in one.drains])
    print(f"RESULT replicas1_confirm_per_s {mean([p.per_s for p in one.confirms]):.1f}")
    print(f"RESULT replicas2_confirm_per_s {mean([p.per_s for p in two.confirms]):.1f}")
    print(f"RESULT replicas1_drain_per_s {mean([p.per_s for p in one.drains]):.1f}")
    print(f"RESULT replicas2_drain_per_s {mean([p.per_s for p in two.drains]):.1f}")
    print(f"RESULT replicas2_vs_1_drain {drain_ratio:.3f}")
    print(f"RESULT replicas2_vs_1_confirm {confirm_ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--users", type=int, default=400)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
