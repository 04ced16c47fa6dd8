"""How exactly payout_svc holds a channel to its rate while draining a backlog.

    .venv/bin/python -m bench.payout_drain [--orders 6000 --rate 200]

Starts a private mesh as processes (gateway_mock, account_svc, withdraw_svc on free
ports, schemas bench_<run>_*, Redis key prefix bench-<run>), so a mesh already running at
the default addresses neither disturbs the measurement nor is disturbed by it. Then:

1. seeds users (bound method on the channel, funded by signed reward tokens) and places
   `--orders` orders through withdraw_svc's ConfirmWithdraw: every order is a real,
   debited order; its PAYOUT job reaches the channel stream through withdraw_svc's own
   outbox relay (no job is written to Redis by this script);
2. waits until the whole backlog sits in the stream, with no payout_svc running;
3. sets the gateway's capacity above the limit, starts `--processes` payout_svc
   processes with the channel all but closed (0.001/s: one order may go out early), and
   once all are up opens it with SetChannelRate(`--rate`), a live rate change;
4. waits until every order is SUCCEEDED, then reads the gateway's record of every call
   (payouts.requested_at: when the call reached the gateway) made after the opening and
   reports the achieved rate, the most calls in any one-second window, and the drain
   time (first call .. every order SUCCEEDED) against the ideal orders / rate.

Everything it created (processes, schemas, Redis keys) is removed at the end. Last lines:
    RESULT payout_rate_accuracy <achieved / limit>
    RESULT payout_max_window_ratio <max calls in a 1 s window / limit>
    RESULT payout_drain_vs_ideal <drain time / ideal>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from bench import pgstate
from campaign.tokens import RewardGrant, keyring_from_env
from edge.client import UserSessions
from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools import meshctl
from tools.loadlib import four_eyes
from tools.loadlib.clients import open_channel, retry_unavailable
from tools.loadlib.cpu import read_stat
from tools.loadlib.seeding import bounded_gather
from tools.loadlib.stats import max_in_window

ROOT = Path(__file__).resolve().parent.parent

# payout_svc processes start with the channel paused (rate 0: no gateway calls), so that the
# drain begins with every process up and warm; SetChannelRate then opens it (a live rate
# change).
PAUSED_RATE = 0
CORE = ("gateway_mock", "account_svc", "withdraw_svc")
ORDERS_PER_USER = 100


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class BenchMesh:
    """A private mesh: its own ports, schemas, key prefix and run directory."""

    run_id: str
    channel: str
    env: dict[str, str]
    run_dir: Path
    payout_layouts: list[meshctl.Layout] = field(default_factory=list)
    payout_addrs: list[str] = field(default_factory=list)
    payout_envs: list[dict[str, str]] = field(default_factory=list)

    @property
    def keys(self) -> Keys:
        return Keys(self.env["MESH_KEY_PREFIX"])

    @property
    def layout(self) -> meshctl.Layout:
        return meshctl.Layout(self.run_dir / "core")

    def schema(self, service: str) -> str:
        return self.env[f"{service.upper()}_DB_SCHEMA"]

    @classmethod
    def create(cls, channel: str) -> BenchMesh:
        run_id = uuid.uuid4().hex[:8]
        env = {
            "DATABASE_URL": os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            "REDIS_URL": os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
            "MESH_KEY_PREFIX": f"bench-{run_id}",
            "REWARD_TOKEN_KEYS": f"bench:{secrets.token_hex(16)}",
            "REWARD_TOKEN_ACTIVE_KEY": "bench",
            # The simulated users' sessions are signed with a key of this run alone.
            "SESSION_TOKEN_KEYS": f"bench:{secrets.token_hex(32)}",
            "MESH_SHUTDOWN_GRACE_S": "5",
            "WITHDRAW_RELAY_INTERVAL_MS": "100",
            "WITHDRAW_RELAY_BATCH": "1000",
            "WITHDRAW_COMPENSATION_ENABLED": "false",
            # A few bench users confirm far more often than a person could: no per-user limits.
            "WITHDRAW_USER_CONFIRMS_PER_MIN": "0",
            "ACCOUNT_USER_CREDITS_PER_MIN": "0",
            # PostgreSQL's connections are shared with whatever else runs on this machine.
            "GATEWAY_DB_POOL_SIZE": "6",
            "ACCOUNT_DB_POOL_SIZE": "6",
            "WITHDRAW_DB_POOL_SIZE": "8",
            "PAYOUT_DB_POOL_SIZE": "2",
            "PAYOUT_CHANNELS": channel,
            "GATEWAY_CHANNELS": channel,
            "WITHDRAW_CHANNELS": channel,
        }
        for service in (*CORE, "payout_svc"):
            upper = service.upper()
            env[f"{upper}_DB_SCHEMA"] = f"bench_{run_id}_{service.split('_')[0]}"
            env[f"{upper}_METRICS_PORT"] = "0"
        meshctl.on_free_ports(env, CORE)
        run_dir = ROOT / ".run" / f"bench-payout-{run_id}"
        return cls(run_id, channel, env, run_dir)

    def start_core(self) -> None:
        meshctl.up(self.env, self.layout, services=CORE)

    def start_payouts(self, count: int, extra: dict[str, str]) -> None:
        for n in range(count):
            layout = meshctl.Layout(self.run_dir / f"payout-{n}")
            env = {**self.env, **extra}
            meshctl.on_free_ports(env, ("payout_svc",))
            meshctl.up(env, layout, services=("payout_svc",))
            self.payout_layouts.append(layout)
            self.payout_addrs.append(env["PAYOUT_SVC_ADDR"])
            self.payout_envs.append(env)

    def pids(self) -> dict[str, int]:
        found = {s: meshctl.running_pid(s, self.layout) for s in CORE}
        for n, layout in enumerate(self.payout_layouts):
            found[f"payout_svc#{n}"] = meshctl.running_pid("payout_svc", layout)
        return {name: pid for name, pid in found.items() if pid is not None}

    def stop(self) -> None:
        for layout in self.payout_layouts:
            meshctl.down(layout, services=("payout_svc",), grace=8.0)
        meshctl.down(self.layout, services=CORE, grace=8.0)

    async def cleanup(self) -> None:
        client = open_redis(self.env["REDIS_URL"], env=self.env)
        try:
            async for key in client.scan_iter(match=f"{self.env['MESH_KEY_PREFIX']}:*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()
        conn = await asyncpg.connect(self.env["DATABASE_URL"])
        try:
            for service in (*CORE, "payout_svc"):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema(service)}" CASCADE')
        finally:
            await conn.close()

    def channel_to(self, service: str) -> grpc.aio.Channel:
        return open_channel(self.env[f"{service.upper()}_ADDR"], env=self.env)

    async def pool(self, service: str) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(self.env["DATABASE_URL"], min_size=1, max_size=2,
                                         server_settings={"search_path": self.schema(service)})
        assert pool is not None
        return pool


@contextlib.contextmanager
def private_mesh(channel: str, keep: bool = False) -> Iterator[BenchMesh]:
    bench = BenchMesh.create(channel)
    say(f"private mesh {bench.run_id}: logs in {bench.run_dir}")
    try:
        bench.start_core()
        yield bench
    finally:
        bench.stop()
        if not keep:
            asyncio.run(bench.cleanup())


async def place_orders(bench: BenchMesh, count: int, amount_fen: int = 100, concurrency: int = 48) -> None:
    """Bind, fund and confirm `count` real orders through the mesh."""
    users = [(9_100_000_000_000 + int(bench.run_id, 16) % 10**6 * 1000 + i, f"bm-{bench.run_id}-{i}")
             for i in range((count + ORDERS_PER_USER - 1) // ORDERS_PER_USER)]
    ring = keyring_from_env(bench.env)
    gateway = gateway_pb2_grpc.GatewayServiceStub(bench.channel_to("gateway_mock"))
    account = account_pb2_grpc.AccountServiceStub(bench.channel_to("account_svc"))
    withdraw = withdraw_pb2_grpc.WithdrawServiceStub(bench.channel_to("withdraw_svc"))
    started = time.monotonic()

    async def seed(user: tuple[int, str]) -> None:
        uid, method_id = user
        await retry_unavailable(lambda: gateway.BindMethod(gateway_pb2.BindMethodRequest(
            uid=uid, channel=bench.channel, account=f"62{uid:017d}", method_id=method_id), timeout=10))
        grant = RewardGrant(f"bench-{uid}", uid, ORDERS_PER_USER * amount_fen, "bench", int(time.time()))
        token = ring.sign(grant)
        credit = account_pb2.ForceCreditRequest(uid=uid, tokens=[token])
        await retry_unavailable(lambda: account.ForceCredit(credit, timeout=10))

    await bounded_gather(users, seed, 16)
    say(f"seeded {len(users)} users in {time.monotonic() - started:.1f}s")

    started = time.monotonic()
    requests = [(users[i // ORDERS_PER_USER], i) for i in range(count)]
    done = 0

    sessions = UserSessions.from_env(bench.env)

    async def confirm(item: tuple[tuple[int, str], int]) -> None:
        nonlocal done
        (uid, method_id), n = item
        request = withdraw_pb2.ConfirmWithdrawRequest(uid=uid, request_id=f"bench-{n}", amount_fen=amount_fen,
                                                      method_id=method_id)
        signed_in = sessions.metadata(uid)
        reply = await retry_unavailable(
            lambda: withdraw.ConfirmWithdraw(request, timeout=30, metadata=signed_in))
        if reply.order.state != withdraw_pb2.ORDER_STATE_PENDING_PAYOUT:
            raise RuntimeError(f"order {reply.order.order_id} is {reply.order.state}, not PENDING_PAYOUT")
        done += 1
        if done % 1000 == 0:
            say(f"  {done} orders placed")

    await bounded_gather(requests, confirm, concurrency)
    elapsed = time.monotonic() - started
    say(f"placed {count} orders through ConfirmWithdraw in {elapsed:.1f}s ({count / elapsed:.0f}/s)")


async def wait_backlog(bench: BenchMesh, count: int, timeout: float = 120.0) -> None:
    """Until withdraw_svc's relay has put every job on the stream."""
    client = open_redis(bench.env["REDIS_URL"], env=bench.env)
    try:
        deadline = time.monotonic() + timeout
        while (length := int(await client.xlen(bench.keys.payout_stream(bench.channel)))) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {length} of {count} payout jobs reached the stream")
            await asyncio.sleep(0.2)
        say(f"backlog ready: {length} jobs on {bench.keys.payout_stream(bench.channel)}")
    finally:
        await client.aclose()


async def set_gateway_capacity(bench: BenchMesh, capacity: int) -> None:
    async with bench.channel_to("gateway_mock") as channel:
        admin = gateway_pb2_grpc.GatewayAdminServiceStub(channel)
        await admin.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(faults=gateway_pb2.ChannelFaults(
            channel=bench.channel, capacity_per_second=capacity)), timeout=10)


async def set_rate(bench: BenchMesh, rate: float, unlimited: bool = False) -> None:
    async with open_channel(bench.payout_addrs[0], env=bench.payout_envs[0]) as channel:
        admin = payout_pb2_grpc.PayoutAdminServiceStub(channel)
        request = payout_pb2.SetChannelRateRequest(channel=bench.channel, rate_per_second=rate,
                                                   unlimited=unlimited)
        await four_eyes.set_rate(four_eyes.header_hands(admin), request, reason="payout drain bench: open")


def start_paused_then_open(bench: BenchMesh, processes: int, workers: int,
                           rate: float) -> tuple[float, dict[str, float]]:
    """Start payout_svc processes with the channel paused, open it at `rate` once all are up
    (rate 0 here: opened unlimited, said so explicitly to SetChannelRate).
    Returns when it was opened (time.time()) and the CPU times at that moment."""
    launched = time.time()
    bench.start_payouts(processes, {
        "PAYOUT_DEFAULT_RATES": f"{bench.channel}:{PAUSED_RATE}",
        "PAYOUT_WORKERS_PER_CHANNEL": str(workers),
        # Only so that the second process sees the opening as soon as the first does.
        "PAYOUT_RATE_REFRESH_S": "0.2",
    })
    say(f"{processes} payout_svc processes up after {time.time() - launched:.1f}s; "
        f"opening the channel at {rate:g}/s" if rate else "opening the channel without a limit")
    cpu_before = cpu_seconds(bench.pids())
    opened = time.time()
    asyncio.run(set_rate(bench, rate, unlimited=not rate))
    return opened, cpu_before


async def wait_settled(bench: BenchMesh, count: int, timeout: float) -> float:
    """Wall-clock time (time.time()) at which every order had settled."""
    pool = await bench.pool("withdraw_svc")
    try:
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while True:
            rows = await pool.fetch("SELECT state, count(*) AS n FROM orders GROUP BY state")
            states = {r["state"]: r["n"] for r in rows}
            settled = states.get("SUCCEEDED", 0) + states.get("FAILED", 0)
            if settled >= count:
                if states.get("FAILED"):
                    raise RuntimeError(f"{states['FAILED']} orders FAILED; the gateway had no faults")
                return time.time()
            if time.monotonic() > deadline:
                raise RuntimeError(f"not drained after {timeout:.0f}s: {states}")
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                say(f"  {settled}/{count} settled {states}")
            await asyncio.sleep(0.1)
    finally:
        await pool.close()


async def gateway_call_times(bench: BenchMesh) -> list[float]:
    pool = await bench.pool("gateway_mock")
    try:
        rows = await pool.fetch("SELECT requested_at FROM payouts WHERE channel = $1 ORDER BY requested_at",
                                bench.channel)
    finally:
        await pool.close()
    return [r["requested_at"].timestamp() for r in rows]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process has used so far (Linux /proc)."""
    stats = {name: read_stat(pid) for name, pid in pids.items()}
    return {name: stat.cpu_s for name, stat in stats.items() if stat is not None}


def cpu_report(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    return ", ".join(f"{name} {(after[name] - before.get(name, 0.0)) / seconds:.0%}"
                     for name in after)


def per_second(times: list[float]) -> list[int]:
    if not times:
        return []
    first = times[0]
    counts = [0] * (int(times[-1] - first) + 1)
    for t in times:
        counts[int(t - first)] += 1
    return counts


async def prepare(bench: BenchMesh, orders: int) -> None:
    await place_orders(bench, orders)
    await wait_backlog(bench, orders)
    # payout_svc's schema does not exist yet (it starts later): skipped.
    schemas = [bench.schema(s) for s in (*CORE, "payout_svc")]
    await pgstate.prepare(bench.env["DATABASE_URL"], schemas, say=say)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="PAYOUT_WORKERS_PER_CHANNEL")
    parser.add_argument("--gateway-capacity", type=int, default=1000)
    parser.add_argument("--channel", default="bank")
    parser.add_argument("--keep", action="store_true", help="keep schemas and Redis keys")
    args = parser.parse_args()

    with private_mesh(args.channel, keep=args.keep) as bench:
        asyncio.run(prepare(bench, args.orders))
        asyncio.run(set_gateway_capacity(bench, args.gateway_capacity))
        opened, cpu_before = start_paused_then_open(bench, args.processes, args.workers, args.rate)
        settled_at = asyncio.run(wait_settled(bench, args.orders, timeout=args.orders / args.rate * 3 + 60))
        cpu = cpu_report(cpu_before, cpu_seconds(bench.pids()), settled_at - opened)
        every_call = asyncio.run(gateway_call_times(bench))

    if len(every_call) != args.orders:
        raise SystemExit(f"the gateway recorded {len(every_call)} payouts for {args.orders} orders")
    calls = [t for t in every_call if t >= opened]
    early = len(every_call) - len(calls)
    n = len(calls)
    ideal = n / args.rate
    first, last = calls[0], calls[-1]
    span = last - first
    achieved = n / (span + 1.0 / args.rate)
    drain = settled_at - first
    worst = max_in_window(calls)
    seconds = per_second(calls)
    print()
    print(f"orders drained           {n} through {args.processes} payout_svc processes "
          f"x {args.workers} workers, channel {args.channel!r} limited to {args.rate:g}/s "
          f"(gateway capacity {args.gateway_capacity}/s); {early} paid before the channel opened")
    print(f"first..last gateway call {span:.2f}s  -> achieved {achieved:.1f}/s")
    print(f"drain (first call .. every order SUCCEEDED) {drain:.2f}s, ideal {ideal:.2f}s "
          f"(from SetChannelRate: {settled_at - opened:.2f}s)")
    print(f"max calls in any 1 s window {worst} (limit {args.rate:g})")
    inner = seconds[1:-1] or seconds
    print(f"calls per whole second (excluding first/last partial): min {min(inner)} max {max(inner)}")
    print(f"calls per second: {' '.join(str(c) for c in seconds)}")
    print(f"CPU of one core during the drain: {cpu}; host load average {os.getloadavg()[0]:.1f}")
    print(f"RESULT payout_rate_accuracy {achieved / args.rate:.4f}")
    print(f"RESULT payout_max_window_ratio {worst / args.rate:.4f}")
    print(f"RESULT payout_drain_vs_ideal {drain / ideal:.4f}")


if __name__ == "__main__":
    main()
