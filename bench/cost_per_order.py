#!/usr/bin/env python3
"""CPU cost of one settled withdrawal across the whole mesh: every service, PostgreSQL and
Redis, from confirm to reconciliation verdict.

    set -a && . .run/devstack.env && set +a
    .venv/bin/python -m bench.cost_per_order [--rate 100] [--duration 20] [--mix]
        [--users 2000] [--profile-dir .run/profiles/<name>]

Runs against the mesh `make up` started (addresses from <SVC>_ADDR, default ports; pids from
.run/pids, or --run-dir). Seeds test users first (bound method, funded account: tools/loadlib
seeding), prints PostgreSQL's autovacuum setting and VACUUM ANALYZEs the mesh's schemas
(bench/pgstate.py), waits until the mesh is quiet, then measures one window:

  load   ConfirmWithdraw open loop at --rate for --duration (tools/loadlib driver); with
         --mix the page-heavy mix of the seed, 3 GetWithdrawPage and 2 GetOrder per confirm;
  drain  until every order of the run is terminal (withdraw_svc's change feed), recon_svc has
         judged them all (GetReconStatus.checked_orders grew by that many) and has self-checked
         them all (recon_svc's recon_self_checked_orders_total grew by that many); bounded by
         --drain-timeout.

Over exactly that window it samples utime + stime (/proc/<pid>/stat, every --interval) of each
service process, of every process of the PostgreSQL server (postmaster children, attributed
through pg_stat_activity: each service's pool backends by application_name, the server's own
processes, and, not counted, other databases' backends) and of the Redis server, and prints
ms of CPU per settled order by process group. Its own CPU (the load generator, and its
monitoring connection's backend) is shown apart and not in the total; so is the rest of the
host's busy time (other work on a shared machine). Nothing is polled during the load; the
drain polls the feed every 0.25 s and recon's status only once the orders are done. Orders
still open once the payout queues are empty and nothing moved for 5 s (a confirm that timed
out with its deduct in doubt) are left to the compensation job: reported, not waited for,
not counted as settled.

--profile-dir DIR also runs `py-spy record --rate 50 --format raw` (plus --profile-args, e.g.
"--gil") against each service for the load phase (DIR/<svc>.txt; summarise with
tools/pyspy_summary.py DIR/*.txt) and writes the services' CPU by thread over the window to
DIR/cpu-by-thread.log. py-spy costs CPU on the same cores: take figures from runs without it.

Last lines:
    RESULT settled_orders N
    RESULT cpu_ms_per_order X                 (confirms only)
    RESULT cpu_ms_per_confirm_with_views Y    (with --mix)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shlex
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench import pgstate
from mesh.recon.v1 import recon_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools import meshctl
from tools.loadlib import gate
from tools.loadlib.clients import MeshClients, address_of
from tools.loadlib.cpu import CpuSampler, CpuWindow, thread_cpu
from tools.loadlib.driver import Driver, DriverConfig, parse_mix
from tools.loadlib.meshprocs import (
    PG_OTHER_DATABASES,
    PG_SERVER,
    PG_UNATTRIBUTED,
    REDIS,
    SELF,
    MeshProcesses,
    mesh_schemas,
    pg_group,
)
from tools.loadlib.runner import funding_per_user
from tools.loadlib.sampler import OrderTracker, channel_stats
from tools.loadlib.seeding import TestUser, discover_channels, new_run_slot, run_uids, seed_users
from tools.loadlib.stats import Recorder

ROOT = Path(__file__).resolve().parent.parent

SERVICES = ("withdraw_svc", "account_svc", "payout_svc", "gateway_mock", "recon_svc")
CONFIRMS_ONLY = "confirm=1"
# The seed's withdraw-page-heavy mix (tools/load.py's default).
PAGE_HEAVY = "page=3,confirm=1,order=2"
PROFILER = "profiler"
SELF_CHECKED_COUNTER = "recon_self_checked_orders_total"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    cpu_s: float
    # CPU per second of the same group while the mesh stood idle just before the window.
    idle_cores: float
    in_total: bool
    indent: bool = False


def cost_rows(by_group: Mapping[str, float], host_busy_s: float,
              idle: Mapping[str, float] | None = None) -> list[Row]:
    """Rows of the table, in order: each service, PostgreSQL (and its parts), Redis, total,
    then what is shown but not counted. `idle` is cores by group in the idle window."""
    idle = idle or {}

    def row(label: str, groups: tuple[str, ...], in_total: bool, indent: bool = False) -> Row:
        return Row(label, sum(by_group.get(g, 0.0) for g in groups), sum(idle.get(g, 0.0) for g in groups),
                   in_total, indent)

    rows = [row(svc, (svc,), True) for svc in SERVICES]
    pg_groups = (*(pg_group(svc) for svc in SERVICES), PG_SERVER)
    rows.append(row("PostgreSQL", pg_groups, True))
    rows += [row(f"backends of {svc}", (pg_group(svc),), False, True) for svc in SERVICES]
    rows.append(row("server processes (postmaster, WAL writer, checkpointer, ...)", (PG_SERVER,), False,
                    True))
    rows.append(row("Redis", (REDIS,), True))
    counted = [r for r in rows if r.in_total]
    rows.append(Row("total", sum(r.cpu_s for r in counted), sum(r.idle_cores for r in counted), False))
    rows += [
        Row("not in the total:", math.nan, math.nan, False),
        row("load generator (this script + its monitoring backend)", (SELF,), False, True),
        row("PostgreSQL backends of the mesh database with no service's name", (PG_UNATTRIBUTED,), False,
            True),
        row("PostgreSQL backends of other databases (other sessions' tests)", (PG_OTHER_DATABASES,), False,
            True),
    ]
    if PROFILER in by_group:
        rows.append(row("py-spy", (PROFILER,), False, True))
    rows.append(Row("rest of the host (other work on the machine)",
                    max(0.0, host_busy_s - sum(by_group.values())), math.nan, False, True))
    return rows


def total_of(rows: list[Row]) -> Row:
    return next(r for r in rows if r.label == "total")


def format_table(rows: list[Row], orders: int, window_s: float) -> str:
    lines = [f"{'process group':<66} {'CPU s':>7} {'ms/order':>9} {'cores':>6} {'idle':>6}"]
    for row in rows:
        label = ("  " if row.indent else "") + row.label
        if math.isnan(row.cpu_s):
            lines.append(label)
            continue
        per_order = row.cpu_s * 1000.0 / orders if orders else math.nan
        idle = "" if math.isnan(row.idle_cores) else f"{row.idle_cores:6.3f}"
        lines.append(f"{label:<66} {row.cpu_s:7.2f} {per_order:9.3f} {row.cpu_s / window_s:6.2f} {idle:>6}")
    return "\n".join(lines)


# ---- observing the mesh -----------------------------------------------------------------


@dataclass(frozen=True)
class ReconView:
    checked: int                # orders with a verdict, ever
    pending: int                # checks queued (grace window, second looks)
    heads: dict[str, float]     # when recon last read each feed to its end (epoch s; 0: never)


async def recon_status(clients: MeshClients) -> ReconView | None:
    """recon_svc's GetReconStatus, or None when it does not answer."""
    try:
        reply = await clients.recon.GetReconStatus(recon_pb2.GetReconStatusRequest(), timeout=5.0,
                                                   metadata=clients.metadata)
    except grpc.aio.AioRpcError:
        return None
    return ReconView(reply.checked_orders, reply.pending_checks,
                     {p.feed: p.head_time.seconds + p.head_time.nanos / 1e9 for p in reply.positions})


def metrics_url(env: Mapping[str, str], service: str = "recon_svc") -> str | None:
    """A service's Prometheus endpoint (gRPC port + 1000 unless <SVC>_METRICS_PORT)."""
    port = env.get(f"{service.upper()}_METRICS_PORT")
    if port is None:
        host, _, grpc_port = address_of(service, env).rpartition(":")
        return f"http://{host or '127.0.0.1'}:{int(grpc_port) + 1000}/metrics"
    return None if port == "0" else f"http://127.0.0.1:{port}/metrics"


def counter_total(metrics_text: str, name: str) -> int:
    """The sum of one counter over all its label sets, from a Prometheus text page."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def server_calls(metrics_text: str) -> dict[str, float]:
    """rpc_server_requests_total by method (all statuses), from a Prometheus text page."""
    calls: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("rpc_server_requests_total{") and (m := _METHOD_LABEL.search(line)):
            method = m.group(1).rsplit("/", 1)[-1]
            calls[method] = calls.get(method, 0.0) + float(line.rsplit(" ", 1)[1])
    return calls


_METHOD_LABEL = re.compile(r'rpc_method="([^"]+)"')


async def calls_by_service(env: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Every service's server calls by method so far; a service whose page does not answer
    is left out (its row is then missing from the calls table, not zero)."""

    def fetch(url: str) -> str:
        with urllib.request.urlopen(url, timeout=5.0) as reply:
            return str(reply.read().decode())

    seen: dict[str, dict[str, float]] = {}
    for svc in SERVICES:
        url = metrics_url(env, svc)
        if url is None:
            continue
        try:
            seen[svc] = server_calls(await asyncio.to_thread(fetch, url))
        except OSError:
            continue
    return seen


def calls_table(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]],
                orders: int) -> str:
    """Server calls per settled order over the window, by service and method: what batching
    does, independent of how busy the box was."""
    lines = [f"{'server calls per settled order':<58}{'calls':>9}{'per order':>11}"]
    total = 0.0
    for svc, now in after.items():
        for method, count in sorted(now.items()):
            made = count - before.get(svc, {}).get(method, 0.0)
            if made <= 0:
                continue
            total += made
            lines.append(f"  {svc + ' ' + method:<56}{made:>9.0f}{_per(made, orders):>11.3f}")
    lines.append(f"  {'all':<56}{total:>9.0f}{_per(total, orders):>11.3f}")
    return "\n".join(lines)


def _per(count: float, orders: int) -> float:
    return count / orders if orders else math.nan


async def self_checks(url: str | None) -> int | None:
    if url is None:
        return None

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=5.0) as reply:
            return str(reply.read().decode())

    try:
        return counter_total(await asyncio.to_thread(fetch), SELF_CHECKED_COUNTER)
    except OSError:
        return None


async def wait_quiet(clients: MeshClients, since: float, timeout_s: float) -> bool:
    """Until the seeding's echoes are over: payout queues empty and recon has read every feed
    to its end after `since` (so it applied the seeding's credits) with no check pending."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        stats = await channel_stats(clients, timeout_s=3.0)
        queued = None if stats is None else sum(int(c["backlog"] + c["pending"]) for c in stats.values())
        recon = await recon_status(clients)
        if queued == 0 and recon is not None and recon.heads and min(recon.heads.values()) > since \
                and recon.pending == 0:
            return True
        if loop.time() >= deadline:
            log(f"mesh not quiet after {timeout_s:.0f}s (queued {queued}, recon {recon}); measuring anyway")
            return False
        await asyncio.sleep(0.25)


@dataclass
class Drained:
    ok: bool
    orders: int
    by_state: dict[str, int]
    judged: int
    self_checked: int | None
    status_polls: int

    @property
    def settled(self) -> int:
        return self.by_state.get("SUCCEEDED", 0) + self.by_state.get("FAILED", 0)

    @property
    def left_open(self) -> int:
        return self.orders - self.settled


async def queues_empty(clients: MeshClients) -> bool:
    stats = await channel_stats(clients, timeout_s=3.0)
    return stats is not None and sum(int(c["backlog"] + c["pending"]) for c in stats.values()) == 0


async def wait_judged(clients: MeshClients, tracker: OrderTracker, answered: int, checked0: int,
                      self_checked0: int | None, url: str | None, timeout_s: float,
                      stall_s: float = 5.0) -> Drained:
    """Until every order of the run is terminal, judged by recon and self-checked (see the
    module docstring), or timeout. Orders still open once the payout queues are empty and
    no order of the run changed state for `stall_s` are not being worked on (a deduct left in
    doubt by a confirm that timed out): the compensation job owns them; they are reported,
    not waited for. recon's status is asked only once the orders are done: it counts rows,
    and polling it during the load would be measured too."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout_s
    judged, checks, polls = 0, None, 0
    while True:
        await tracker.poll()
        orders, still_open = len(tracker.states), tracker.open_orders()
        quiet = loop.time() - max(started, tracker.last_change_at) >= stall_s
        done = still_open == 0 or (quiet and await queues_empty(clients))
        if orders >= answered and done:
            settled = orders - still_open
            status = await recon_status(clients)
            polls += 1
            judged = status.checked - checked0 if status else 0
            if judged >= settled:
                now = await self_checks(url)
                checks = None if now is None or self_checked0 is None else now - self_checked0
                if checks is None or checks >= settled:
                    return Drained(True, orders, tracker.counts(), judged, checks, polls)
        if loop.time() >= deadline:
            return Drained(False, orders, tracker.counts(), judged, checks, polls)
        await asyncio.sleep(0.25)


# ---- profiling (optional) ---------------------------------------------------------------


async def start_profilers(services: Mapping[str, int], out: Path, seconds: float,
                          extra_args: list[str]) -> list[asyncio.subprocess.Process]:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        raise SystemExit(f"{spy} not found: `make venv` installs the py-spy pinned in requirements/dev.in")
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for svc, pid in services.items():
        # Full file names: tools/pyspy_summary.py tells project code from libraries by path.
        procs.append(await asyncio.create_subprocess_exec(
            str(spy), "record", "--rate", "50", "--duration", str(math.ceil(seconds)), "--pid", str(pid),
            "--format", "raw", "--full-filenames", *extra_args,
            "-o", str(out / f"{svc}.txt"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
    return procs


def thread_split(pid: int, before: Mapping[int, tuple[str, float]],
                 after: Mapping[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by kind of thread: py-spy sees only Python frames, and gRPC's C++ threads
    (event_engine, ...) not at all, so the profile's shares are of the main thread only."""
    split: dict[str, float] = {}
    for tid, (name, cpu_s) in after.items():
        kind = "main (event loop)" if tid == pid else ("other python threads" if name == "python" else name)
        split[kind] = split.get(kind, 0.0) + cpu_s - before.get(tid, (name, 0.0))[1]
    return split


# ---- the run ----------------------------------------------------------------------------


async def progress(driver: Driver, every_s: float = 5.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        s = driver.state
        log(f"  load: {s.issued} calls issued, {s.done} done, {s.inflight} in flight, "
            f"{len(s.order_ids)} orders confirmed")


async def open_gate(clients: MeshClients, uids: list[int], tag: str) -> withdraw_pb2.GateConfig | None:
    """Open the gate for the run if it refuses test users; returns the config to restore."""
    before = await gate.get_config(clients)
    probe = uids[:10]
    if await gate.wait_gate(clients, probe, want_open=True, timeout_s=0.0):
        return None
    await gate.set_config(clients, gate.open_config(before), reason=f"cost bench {tag}: open")
    if not await gate.wait_gate(clients, probe, want_open=True, timeout_s=15.0):
        raise SystemExit("the gate did not open for test users within 15 s")
    log("gate opened for the run (restored after)")
    return before


async def idle_cores(procs: MeshProcesses, seconds: float, interval_s: float) -> dict[str, float]:
    """CPU per second of each group while nothing is sent: the mesh's background loops
    (relay, payout workers, recon followers, ...) and whatever else shares the machine."""
    if seconds <= 0:
        return {}
    sampler = CpuSampler(procs.discover, interval_s=interval_s)
    loop = asyncio.get_running_loop()
    await sampler.start()
    started = loop.time()
    await asyncio.sleep(seconds)
    window = await sampler.stop()
    elapsed = loop.time() - started
    return {group: used / elapsed for group, used in window.by_group().items()}


@dataclass
class Measured:
    window: CpuWindow
    window_s: float
    load_s: float
    drained: Drained
    summary: dict[str, dict[str, object]]
    samples: int
    load_avg: tuple[float, float]
    calls_before: dict[str, dict[str, float]]
    calls_after: dict[str, dict[str, float]]


async def measure(clients: MeshClients, procs: MeshProcesses, args: argparse.Namespace,
                  seeded_users: list[TestUser], config: DriverConfig, tracker: OrderTracker) -> Measured:
    status0 = await recon_status(clients)
    if status0 is None:
        raise SystemExit("recon_svc does not answer GetReconStatus")
    url = metrics_url(os.environ)
    self0 = await self_checks(url)
    if self0 is None:
        log(f"WARNING: account_svc metrics not readable at {url}: the drain waits for verdicts only, "
            "not for recon's self-checks")
    recorder = Recorder()
    driver = Driver(clients, seeded_users, config, recorder)
    sampler = CpuSampler(procs.discover, interval_s=args.interval)
    spies = []
    threads0: dict[str, dict[int, tuple[str, float]]] = {}
    if args.profile_dir is not None:
        spies = await start_profilers(procs.services, args.profile_dir, args.duration,
                                      shlex.split(args.profile_args))
        procs.extra.update({p.pid: PROFILER for p in spies})
        threads0 = {svc: thread_cpu(pid) for svc, pid in procs.services.items()}
    load_avg = os.getloadavg()[0]
    log(f"window opens: {','.join(f'{k}={v}' for k, v in config.mix.items())} at {config.rate:g} confirms/s "
        f"for {config.duration_s:g}s (host load average {load_avg:.1f})")
    loop = asyncio.get_running_loop()
    calls_before = await calls_by_service(os.environ)
    await sampler.start()
    opened = loop.time()
    ticker = asyncio.create_task(progress(driver))
    try:
        state = await driver.run()
    finally:
        ticker.cancel()
    load_s = loop.time() - opened
    log(f"load done after {load_s:.1f}s: {len(state.order_ids)} orders confirmed; draining "
        f"(at most {args.drain_timeout:g}s)")
    drained = await wait_judged(clients, tracker, len(state.order_ids), status0.checked, self0, url,
                                args.drain_timeout)
    window = await sampler.stop()
    window_s = loop.time() - opened
    calls_after = await calls_by_service(os.environ)
    if args.profile_dir is not None:
        lines = []
        for svc, pid in procs.services.items():
            split = thread_split(pid, threads0[svc], thread_cpu(pid))
            lines.append(f"{svc}: " + ", ".join(f"{kind} {used:.2f}s" for kind, used in
                                                 sorted(split.items(), key=lambda kv: -kv[1])))
        (args.profile_dir / "cpu-by-thread.log").write_text("".join(f"{line}\n" for line in lines))
        log("CPU by thread over the window:\n  " + "\n  ".join(lines))
    for spy in spies:
        await asyncio.wait_for(spy.wait(), timeout=60)
    return Measured(window, window_s, load_s, drained, recorder.summary(load_s), sampler.samples + 2,
                    (load_avg, os.getloadavg()[0]), calls_before, calls_after)


def report(m: Measured, args: argparse.Namespace, mix_text: str, idle: dict[str, float],
           idle_s: float) -> tuple[int, float]:
    """Prints what was measured; returns the settled orders and ms of CPU per settled order."""
    for rpc, s in m.summary.items():
        log(f"{rpc}: {s['ok']} ok of {s['calls']} ({s['rate']}/s), p50 {s['p50']} ms, p99 {s['p99']} ms, "
            f"shed by admission {s['shed']}, errors {s['errors'] or 'none'}")
    d = m.drained
    settled = d.settled
    if d.left_open:
        log(f"WARNING: {d.left_open} orders left open for the compensation job (not counted as settled)")
    log(f"orders {d.by_state}; judged by recon {d.judged}, self-checked "
        f"{'not followed' if d.self_checked is None else d.self_checked}; recon status asked "
        f"{d.status_polls} times")
    if not d.ok:
        log(f"NOT drained within {args.drain_timeout:g}s: the window below ends at the timeout")
    lost, late = m.window.lost(), m.window.late()
    print(f"window {m.window_s:.2f}s = load {m.load_s:.2f}s + drain {m.window_s - m.load_s:.2f}s; "
          f"{settled} orders settled; CPU sampled {m.samples} times; processes ended inside the window "
          f"{lost or 'none'}{f'; seen late {late}' if late else ''}; host load average "
          f"{m.load_avg[0]:.1f} -> {m.load_avg[1]:.1f}")
    print(f"mix {mix_text} at {args.rate:g} confirms/s. Shared machine: other sessions' tests may use the "
          "same cores, PostgreSQL server and Redis at the same time (rows 'not in the total').")
    rows = cost_rows(m.window.by_group(), m.window.host_busy_used_s, idle)
    print(format_table(rows, settled, m.window_s))
    total = total_of(rows)
    per_order = total.cpu_s * 1000.0 / settled if settled else math.nan
    print(calls_table(m.calls_before, m.calls_after, settled))
    if idle:
        background = total.idle_cores * m.window_s
        print(f"idle column: cores each group used in {idle_s:g}s with no traffic just before the window; "
              f"at that rate the mesh alone would use {background:.2f}s of the window's {total.cpu_s:.2f}s "
              f"({background * 1000.0 / settled if settled else math.nan:.3f} ms/order)")
    return settled, per_order


async def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    dsn = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    mix_text = PAGE_HEAVY if args.mix else CONFIRMS_ONLY
    clients = MeshClients.from_env(caller="cost-bench")
    procs: MeshProcesses | None = None
    gate_before: withdraw_pb2.GateConfig | None = None
    try:
        missing = await clients.wait_serving(timeout=20.0)
        if missing:
            log(f"not serving: {', '.join(missing)}; start the mesh with `make up`")
            return 2
        procs = await MeshProcesses.find(env, dsn, redis_url, meshctl.Layout(args.run_dir))
        absent = [svc for svc in SERVICES if svc not in procs.services]
        if absent:
            log(f"no running process for {', '.join(absent)} in {args.run_dir / 'pids'}: this bench measures "
                "the mesh `make up` started from this checkout (or pass --run-dir)")
            return 2
        for note in procs.notes:
            log(f"WARNING: {note}")
        log("measuring " + ", ".join(f"{svc} pid {pid}" for svc, pid in procs.services.items())
            + f", PostgreSQL postmaster {procs.postmaster} (database {procs.database}), "
            f"Redis pid {procs.redis_pid}")

        run_slot = args.run_slot if args.run_slot >= 0 else new_run_slot()
        uids = run_uids(run_slot, args.users)
        tag = f"cost-{run_slot}-{int(time.time())}"
        config = DriverConfig(rate=args.rate, duration_s=args.duration, mix=parse_mix(mix_text),
                              timeout_s=args.timeout, run_tag=tag, seed=run_slot)
        channels = await discover_channels(clients)
        seeded = await seed_users(clients, uids, funding_per_user(config, args.users), run_slot=run_slot,
                                  channels=channels, say=log)
        gate_before = await open_gate(clients, uids, tag)
        await pgstate.prepare(dsn, mesh_schemas(env).values(), say=log)
        await wait_quiet(clients, since=time.time(), timeout_s=30.0)
        tracker = OrderTracker(clients, uids[0], uids[-1] + 1)
        await tracker.skip_to_end()
        idle = await idle_cores(procs, args.idle, args.interval)
        measured = await measure(clients, procs, args, seeded.users, config, tracker)
    finally:
        await gate.restore(clients, gate_before, "cost bench: restore", log)
        if procs is not None:
            await procs.close()
        await clients.close()

    settled, per_order = report(measured, args, mix_text, idle, args.idle)
    print(f"RESULT settled_orders {settled}")
    print(f"RESULT {'cpu_ms_per_confirm_with_views' if args.mix else 'cpu_ms_per_order'} {per_order:.3f}")
    return 0 if measured.drained.ok else 1


def main() -> int:
    # The benchmark's mesh is a private dev mesh: without SESSION_TOKEN_KEYS its services and
    # its simulated users share the well-known dev session key.
    os.environ.setdefault("MESH_ENV", "dev")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="confirms per second, open loop (default 100)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--mix", action="store_true",
                   help=f"the page-heavy mix {PAGE_HEAVY} instead of confirms only")
    p.add_argument("--users", type=int, default=2000, help="test users to seed (default 2000)")
    p.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, seconds")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="bound on the wait after the load")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between CPU samples (default 0.5)")
    p.add_argument("--idle", type=float, default=5.0,
                   help="seconds of an idle window measured just before the load (0: none; default 5)")
    p.add_argument("--run-slot", type=int, default=-1, help="uid block of the test users (default: random)")
    p.add_argument("--run-dir", type=Path, default=meshctl.RUN,
                   help="the mesh's run directory, for its pidfiles (default .run)")
    p.add_argument("--profile-dir", type=Path, default=None,
                   help="also record py-spy profiles of every service during the load into this directory")
    p.add_argument("--profile-args", default="",
                   help='more py-spy record options, e.g. "--gil" (samples holding the GIL only)')
    args = p.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.users <= 0:
        raise SystemExit("--rate, --duration and --users must be > 0")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
