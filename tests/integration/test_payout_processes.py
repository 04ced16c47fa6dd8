"""payout_svc as real processes (`python -m payout_svc`) against an in-process mesh
(gateway_mock, account_svc, withdraw_svc) on real PostgreSQL and Redis: a process killed
with SIGKILL mid-payout, and two processes sharing one channel's rate limit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.gateway.v1 import gateway_pb2 as gw
from meshkit.db import connect_schema
from tests import harness
from tests.harness import unlimited_rates
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually
from tools.loadlib.stats import max_in_window
from tools.meshctl import free_ports

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = "pkill,prate"
TERMINAL = {"SUCCEEDED", "FAILED"}


class ServiceProcess:
    """`python -m <service>` on a free port, logging to a file."""

    def __init__(self, service: str, env: dict[str, str], log_path: Path) -> None:
        self.service = service
        self.port, admin = free_ports(2)
        self.log_path = log_path
        upper = service.upper()
        full = {
            **os.environ, **env,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
            f"{upper}_PORT": str(self.port),
            f"{upper}_ADMIN_PORT": str(admin),
            f"{upper}_METRICS_PORT": "0",
            "MESH_SHUTDOWN_GRACE_S": "5",
        }
        with ExitStack() as stack:
            log = stack.enter_context(log_path.open("ab"))
            self.proc = subprocess.Popen([sys.executable, "-m", service], env=full, cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 30.0) -> None:
        async def probe() -> bool:
            assert self.proc.poll() is None, f"{self.service} exited early:\n{self.log_tail()}"
            async with harness.channel(self.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                except grpc.aio.AioRpcError:
                    return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(probe, timeout=timeout, interval=0.2, what=f"{self.service} to serve")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return -9
        return int(self.proc.returncode)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={
        "GATEWAY_CHANNELS": CHANNELS, "WITHDRAW_CHANNELS": CHANNELS, "WITHDRAW_RELAY_INTERVAL_MS": "100",
        "PAYOUT_SVC_DB_SCHEMA": f"payout_{uuid.uuid4().hex[:8]}", "GATEWAY_DB_POOL_SIZE": "3",
    })
    yield m
    await m.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.terminate(5)


def payout_env(m: WdMesh, **extra: str) -> dict[str, str]:
    return {
        **m.env,
        "WITHDRAW_SVC_ADDR": m.withdraw_addr,
        "PAYOUT_CHANNELS": CHANNELS,
        "PAYOUT_DEFAULT_RATES": unlimited_rates(CHANNELS),
        "PAYOUT_CLAIM_IDLE_MS": "1000",
        "PAYOUT_LOCK_TTL_MS": "2000",
        "PAYOUT_RETRY_BACKOFF_MS": "20",
        **extra,
    }


async def place_orders(m: WdMesh, channel: str, count: int, amount_fen: int = 200) -> tuple[int, list[str]]:
    uid, method = await m.user(balance_fen=count * amount_fen, channel=channel)
    order_ids: list[str] = []
    for start in range(0, count, 50):
        replies = await asyncio.gather(*(m.confirm(uid, method, amount_fen)
                                         for _ in range(min(50, count - start))))
        order_ids += [r.order.order_id for r in replies]
    return uid, order_ids


async def states_of(m: WdMesh, uid: int) -> dict[str, str]:
    return {r["order_id"]: r["state"] for r in await m.order_rows(uid)}


async def gateway_payouts(m: WdMesh, order_ids: list[str]) -> list[asyncpg.Record]:
    conn = await connect_schema(m.env["DATABASE_URL"], m.env["GATEWAY_MOCK_DB_SCHEMA"])
    try:
        return await conn.fetch("SELECT order_id, state, amount_fen, requested_at FROM payouts"
                                " WHERE order_id = ANY($1::text[])", order_ids)
    finally:
        await conn.close()


async def test_kill_9_mid_payout_then_another_process_finishes_every_order(
    mesh: WdMesh, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    await mesh.gateway_admin().SetChannelFaults(gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(
        channel="pkill", latency_min_ms=250, latency_max_ms=350)), timeout=10)
    uid, order_ids = await place_orders(mesh, "pkill", 40)
    # Batches of 2: the 40 orders go out in a few rounds, so the kill finds some in flight.
    env = payout_env(mesh, PAYOUT_CHANNELS="pkill", PAYOUT_WORKERS_PER_CHANNEL="8", PAYOUT_BATCH_SIZE="2")

    victim = ServiceProcess("payout_svc", env, tmp_path / "victim.log")
    processes.append(victim)
    await victim.ready()

    async def in_flight() -> int:
        states = await states_of(mesh, uid)
        paying = sum(s == "PAYING" for s in states.values())
        done = sum(s in TERMINAL for s in states.values())
        return paying if paying >= 4 and done >= 4 else 0

    paying_at_kill = await eventually(in_flight, timeout=20, interval=0.02, what="payouts in flight")
    victim.kill()
    assert victim.proc.returncode == -signal.SIGKILL
    states = await states_of(mesh, uid)
    stuck = [o for o, s in states.items() if s == "PAYING"]
    assert paying_at_kill >= 4 and stuck, "the kill must catch payouts in flight"

    heir = ServiceProcess("payout_svc", env, tmp_path / "heir.log")
    processes.append(heir)
    await heir.ready()

    async def all_terminal() -> dict[str, str] | None:
        now = await states_of(mesh, uid)
        return now if set(now.values()) <= TERMINAL else None

    final = await eventually(all_terminal, timeout=40, interval=0.2, what="every order to settle")
    assert set(final.values()) == {"SUCCEEDED"}, heir.log_tail()
    payouts = await gateway_payouts(mesh, order_ids)
    # order_id is the gateway's primary key: one row per order at most, so check it is there.
    assert sorted(p["order_id"] for p in payouts) == sorted(order_ids)
    assert {p["state"] for p in payouts} == {"SUCCEEDED"}
    for order_id in stuck:
        assert await mesh.entries(order_id) == ["DEBIT"]
    await mesh.ledger_ok([uid])
    assert heir.terminate() == 0, heir.log_tail()


async def test_two_processes_share_the_channel_rate(
    mesh: WdMesh, processes: list[ServiceProcess], tmp_path: Path, redis_client: Any
) -> None:
    uid, order_ids = await place_orders(mesh, "prate", 300, amount_fen=100)
    # The gateway the payouts go to runs as a process of its own (a second replica over
    # the same schema as the in-process one): what it records as a call's arrival time is
    # then not delayed by withdraw_svc and account_svc sharing its event loop.
    gateway = ServiceProcess("gateway_mock", {**mesh.env, "GATEWAY_DB_POOL_SIZE": "4"}, tmp_path / "gw.log")
    processes.append(gateway)
    await gateway.ready()
    # The limiter admits at most 50 calls in any window of 1 s + margin (Redis clock; see
    # test_payout_redis). Between admission and the gateway's clock a call is delayed by
    # the scheduling of two processes: on a loaded 2-core host, tens of milliseconds more
    # for some calls than others. The margin absorbs that, at 1/11 of the throughput.
    env = payout_env(mesh, PAYOUT_CHANNELS="prate", PAYOUT_DEFAULT_RATES="prate:50",
                     PAYOUT_WORKERS_PER_CHANNEL="8", PAYOUT_RATE_MARGIN_MS="100",
                     GATEWAY_MOCK_ADDR=gateway.address)
    pair = [ServiceProcess("payout_svc", env, tmp_path / f"rate-{n}.log") for n in range(2)]
    processes.extend(pair)
    await asyncio.gather(*(p.ready() for p in pair))
    started = time.monotonic()

    async def drained() -> dict[str, str] | None:
        now = await states_of(mesh, uid)
        return now if set(now.values()) <= TERMINAL else None

    final = await eventually(drained, timeout=40, interval=0.25, what="the backlog to drain")
    elapsed = time.monotonic() - started
    assert set(final.values()) == {"SUCCEEDED"}
    payouts = await gateway_payouts(mesh, order_ids)
    assert len(payouts) == 300
    calls = [p["requested_at"].timestamp() for p in payouts]
    calls.sort()
    assert max_in_window(calls) <= 51
    span = max(calls) - min(calls)
    # Paced (300 calls at 50 per 1.1 s take about 6.6 s), and the backlog drains.
    assert 6.0 <= span <= 15.0, span
    assert elapsed < 30
    consumers = await redis_client.xinfo_consumers(mesh.keys.payout_stream("prate"), "payout")
    assert len(consumers) == 2, "both processes took part"
    for process in pair:
        assert process.terminate() == 0, process.log_tail()
    assert gateway.terminate() == 0, gateway.log_tail()
