#!/usr/bin/env python3
"""CPU cost of one withdraw page view and of one GetOrder across the whole mesh: every
service, PostgreSQL and Redis.

    set -a && . .run/devstack.env && set +a          # or a private mesh's mesh.env
    python -m bench.view_cost [--rate 100] [--calls 1500] [--run-dir .run]
        [--phases page,page_tokens,order] [--profile-dir DIR]

Runs against a running mesh (addresses from <SVC>_ADDR, pids from --run-dir/pids; for a
mesh of another checkout on private ports see bench/private_mesh.py). Seeds --users test
users (a bound method and funding each) and one confirmed order per user, waits until the
payouts and recon are done with them, VACUUM ANALYZEs the mesh's schemas, then measures one
window per phase, each open loop at --rate for --calls calls:

  page         GetWithdrawPage with no reward tokens (balance, methods, recent orders);
  page_tokens  GetWithdrawPage with one fresh signed reward token (1 fen) per view, so the
               page force-credits it (ForceCredit at account_svc instead of GetBalance);
  order        GetOrder of one of the seeded orders, by its owner.

Before each window it measures each group's idle CPU over --idle seconds (the background
loops), and prints per call both the gross figure (everything in the window) and the net
one (minus what the idle rate alone would have used over the window): the net figure is
what the calls cost, the gross one what the box paid. CPU is utime + stime from
/proc/<pid>/stat (tools/loadlib/cpu.py, as bench/cost_per_order.py samples it); the table
of server calls per call (rpc_server_requests_total of every service, before and after)
shows how many peer calls one view makes.

--profile-dir DIR runs py-spy (`record --rate R --format raw`, R = --profile-rate, plus --profile-args) on
withdraw_svc during each window (DIR/<phase>.txt; tools/pyspy_summary.py summarises).

Last lines:
    RESULT cpu_ms_per_page_view X          (net, no tokens)
    RESULT cpu_ms_per_page_view_tokens X   (net, one token)
    RESULT cpu_ms_per_get_order Y          (net)
    RESULT ..._gross for each, and RESULT server_calls_per_<phase>
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench import pgstate
from bench.cost_per_order import (
    PROFILER,
    calls_by_service,
    cost_rows,
    format_table,
    idle_cores,
    open_gate,
    total_of,
    wait_quiet,
)
from campaign.tokens import RewardGrant, keyring_from_env
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools import meshctl
from tools.loadlib import gate
from tools.loadlib.clients import MeshClients
from tools.loadlib.cpu import CpuSampler, CpuWindow
from tools.loadlib.meshprocs import MeshProcesses, mesh_schemas
from tools.loadlib.seeding import TestUser, discover_channels, new_run_slot, run_uids, seed_users
from tools.loadlib.stats import percentiles

PHASES = ("page", "page_tokens", "order")
RESULT_NAME = {"page": "cpu_ms_per_page_view", "page_tokens": "cpu_ms_per_page_view_tokens",
               "order": "cpu_ms_per_get_order"}
ORDER_FEN = 100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Phase:
    name: str
    window: CpuWindow
    window_s: float
    ok: int
    errors: dict[str, int]
    latencies_ms: list[float]
    idle: dict[str, float]
    calls: dict[str, dict[str, float]]


async def open_loop(n: int, rate: float, call: Callable[[int], Awaitable[None]]) -> tuple[int, dict[str, int],
                                                                                          list[float]]:
    """`n` calls at `rate` per second on schedule, whatever the answers' latency."""
    loop = asyncio.get_running_loop()
    errors: dict[str, int] = {}
    latencies: list[float] = []
    ok = 0

    async def one(i: int, due: float) -> None:
        nonlocal ok
        try:
            await call(i)
            ok += 1
            latencies.append((loop.time() - due) * 1000.0)
        except grpc.aio.AioRpcError as err:
            errors[err.code().name] = errors.get(err.code().name, 0) + 1

    started = loop.time()
    tasks = []
    for i in range(n):
        due = started + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return ok, errors, latencies


Calls = dict[str, dict[str, float]]


def calls_made(before: Calls, after: Calls) -> Calls:
    made: dict[str, dict[str, float]] = {}
    for svc, now in after.items():
        for method, count in now.items():
            delta = count - before.get(svc, {}).get(method, 0.0)
            if delta > 0:
                made.setdefault(svc, {})[method] = delta
    return made


def net_total_s(p: Phase) -> tuple[float, float]:
    """(gross, net of the idle rate) CPU seconds of the counted groups over the window."""
    rows = cost_rows(p.window.by_group(), p.window.host_busy_used_s, p.idle)
    total = total_of(rows)
    return total.cpu_s, total.cpu_s - total.idle_cores * p.window_s


def per_call(cpu_s: float, calls: int) -> float:
    return cpu_s * 1000.0 / calls if calls else math.nan


def report(p: Phase) -> None:
    lat = percentiles(p.latencies_ms)
    print(f"\n== {p.name}: {p.ok} ok, errors {p.errors or 'none'}; window {p.window_s:.2f}s; "
          f"p50 {lat['p50']} ms, p99 {lat['p99']} ms")
    rows = cost_rows(p.window.by_group(), p.window.host_busy_used_s, p.idle)
    print(format_table(rows, p.ok, p.window_s).replace("ms/order", " ms/call"))
    gross, net = net_total_s(p)
    print(f"total {per_call(gross, p.ok):.3f} ms/call gross, {per_call(net, p.ok):.3f} ms/call net of the "
          "idle rate")
    print(f"{'server calls per call':<58}{'calls':>9}{'per call':>10}")
    total = 0.0
    for svc, methods in p.calls.items():
        for method, count in sorted(methods.items()):
            total += count
            print(f"  {svc + ' ' + method:<56}{count:>9.0f}{count / max(1, p.ok):>10.3f}")
    print(f"  {'all':<56}{total:>9.0f}{total / max(1, p.ok):>10.3f}")


async def start_profiler(pid: int, out: Path, seconds: float, rate: int,
                         extra: list[str]) -> asyncio.subprocess.Process:
    out.parent.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    return await asyncio.create_subprocess_exec(
        str(py_spy), "record", "--rate", str(rate), "--duration", str(max(1, int(seconds))),
        "--format", "raw", "--full-filenames", *extra, "--pid", str(pid), "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


class Views:
    """The three kinds of call, as the app makes them."""

    def __init__(self, clients: MeshClients, users: list[TestUser], orders: list[tuple[int, str]],
                 tag: str) -> None:
        self.clients = clients
        self.users = users
        self.orders = orders
        self.tag = tag
        self.ring = keyring_from_env(clients.environ)
        self.timeout_s = 5.0

    async def page(self, i: int) -> None:
        user = self.users[i % len(self.users)]
        await self.clients.withdraw.GetWithdrawPage(
            withdraw_pb2.GetWithdrawPageRequest(uid=user.uid), timeout=self.timeout_s,
            metadata=self.clients.user_metadata(user.uid))

    def token(self, uid: int, i: int) -> str:
        return self.ring.sign(RewardGrant(reward_id=f"{self.tag}-view-{i}", uid=uid, amount_fen=1,
                                          source="load_test", issued_at=int(time.time())))

    async def page_tokens(self, i: int, tokens: dict[int, str]) -> None:
        user = self.users[i % len(self.users)]
        await self.clients.withdraw.GetWithdrawPage(
            withdraw_pb2.GetWithdrawPageRequest(uid=user.uid, tokens=[tokens[i]]), timeout=self.timeout_s,
            metadata=self.clients.user_metadata(user.uid))

    async def order(self, i: int) -> None:
        owner, order_id = self.orders[i % len(self.orders)]
        await self.clients.withdraw.GetOrder(
            withdraw_pb2.GetOrderRequest(order_id=order_id), timeout=self.timeout_s,
            metadata=self.clients.user_metadata(owner))


async def confirm_orders(clients: MeshClients, users: list[TestUser], tag: str) -> list[tuple[int, str]]:
    orders: list[tuple[int, str]] = []
    sem = asyncio.Semaphore(16)

    async def confirm(user: TestUser) -> None:
        async with sem:
            reply = await clients.withdraw.ConfirmWithdraw(
                withdraw_pb2.ConfirmWithdrawRequest(uid=user.uid, request_id=f"{tag}-{user.uid}",
                                                    amount_fen=ORDER_FEN, method_id=user.method_id),
                timeout=10.0, metadata=clients.user_metadata(user.uid))
            orders.append((user.uid, reply.order.order_id))

    await asyncio.gather(*(confirm(u) for u in users))
    return orders


async def measure(name: str, clients: MeshClients, procs: MeshProcesses, views: Views,
                  args: argparse.Namespace) -> Phase:
    idle = await idle_cores(procs, args.idle, args.interval)
    call: Callable[[int], Awaitable[None]]
    if name == "page":
        call = views.page
    elif name == "page_tokens":
        # Signed before the window: signing is the app's and the campaign's work, not the mesh's.
        tokens = {i: views.token(views.users[i % len(views.users)].uid, i) for i in range(args.calls)}

        async def call(i: int) -> None:
            await views.page_tokens(i, tokens)
    else:
        call = views.order
    spy = None
    if args.profile_dir is not None:
        spy = await start_profiler(procs.services["withdraw_svc"], args.profile_dir / f"{name}.txt",
                                   args.calls / args.rate, args.profile_rate, shlex.split(args.profile_args))
        procs.extra[spy.pid] = PROFILER
    before = await calls_by_service(os.environ)
    sampler = CpuSampler(procs.discover, interval_s=args.interval)
    loop = asyncio.get_running_loop()
    log(f"{name}: {args.calls} calls at {args.rate:g}/s (host load average {os.getloadavg()[0]:.1f})")
    await sampler.start()
    opened = loop.time()
    ok, errors, latencies = await open_loop(args.calls, args.rate, call)
    # What the calls set going (a credit's feed entry read by recon) within the next moment.
    await asyncio.sleep(args.tail)
    window = await sampler.stop()
    window_s = loop.time() - opened
    after = await calls_by_service(os.environ)
    if spy is not None:
        await asyncio.wait_for(spy.wait(), timeout=60)
        procs.extra.pop(spy.pid, None)
    return Phase(name, window, window_s, ok, errors, latencies, idle, calls_made(before, after))


async def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    dsn = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    clients = MeshClients.from_env(caller="view-bench")
    procs: MeshProcesses | None = None
    gate_before: withdraw_pb2.GateConfig | None = None
    phases: list[Phase] = []
    try:
        missing = await clients.wait_serving(timeout=20.0)
        if missing:
            log(f"not serving: {', '.join(missing)}")
            return 2
        procs = await MeshProcesses.find(env, dsn, redis_url, meshctl.Layout(args.run_dir))
        absent = [svc for svc in meshctl.SERVICES if svc not in procs.services]
        if absent:
            log(f"no running process for {', '.join(absent)} in {args.run_dir / 'pids'}")
            return 2
        for note in procs.notes:
            log(f"WARNING: {note}")
        run_slot = new_run_slot()
        uids = run_uids(run_slot, args.users)
        tag = f"views-{run_slot}-{int(time.time())}"
        channels = await discover_channels(clients)
        seeded = await seed_users(clients, uids, 100_000, run_slot=run_slot, channels=channels,
                                  fund_via="force", say=log)
        gate_before = await open_gate(clients, uids, tag)
        orders = await confirm_orders(clients, seeded.users, tag)
        log(f"seed: {len(orders)} orders confirmed")
        await wait_quiet(clients, since=time.time(), timeout_s=60.0)
        await pgstate.prepare(dsn, mesh_schemas(env).values(), say=log)
        views = Views(clients, seeded.users, orders, tag)
        # Warm every connection and cache path once, outside any window: one view per user
        # (each user's first view misses the methods copy and asks the gateway).
        await open_loop(max(200, len(views.users)), args.rate, views.page)
        await open_loop(min(200, args.calls), args.rate, views.order)
        for name in args.phases:
            phases.append(await measure(name, clients, procs, views, args))
    finally:
        await gate.restore(clients, gate_before, "view bench: restore", log)
        if procs is not None:
            await procs.close()
        await clients.close()

    load = os.getloadavg()
    print(f"host load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; shared machine: other "
          "sessions may use the same cores, PostgreSQL server and Redis")
    for p in phases:
        report(p)
    for p in phases:
        gross, net = net_total_s(p)
        calls = sum(sum(m.values()) for m in p.calls.values())
        print(f"RESULT {RESULT_NAME[p.name]} {per_call(net, p.ok):.3f}")
        print(f"RESULT {RESULT_NAME[p.name]}_gross {per_call(gross, p.ok):.3f}")
        print(f"RESULT server_calls_per_{p.name} {calls / p.ok if p.ok else math.nan:.3f}")
    return 0 if all(not p.errors for p in phases) else 1


def main() -> int:
    os.environ.setdefault("MESH_ENV", "dev")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="calls per second, open loop (default 100)")
    p.add_argument("--calls", type=int, default=1500, help="calls per phase (default 1500)")
    p.add_argument("--users", type=int, default=300, help="test users to seed (default 300)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma separated, of {', '.join(PHASES)}")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle measured before each window")
    p.add_argument("--tail", type=float, default=1.0,
                   help="seconds the window stays open after the last answer (default 1)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between CPU samples")
    p.add_argument("--run-dir", type=Path, default=meshctl.RUN, help="the mesh's run directory (pidfiles)")
    p.add_argument("--profile-dir", type=Path, default=None, help="py-spy profiles of withdraw_svc per phase")
    p.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second (default 50)")
    p.add_argument("--profile-args", default="", help='more py-spy record options, e.g. "--gil"')
    args = p.parse_args()
    args.phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    if any(ph not in PHASES for ph in args.phases):
        raise SystemExit(f"--phases: each one of {', '.join(PHASES)}")
    if args.rate <= 0 or args.calls <= 0 or args.users <= 0:
        raise SystemExit("--rate, --calls and --users must be > 0")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
