"""`make preflight` against the real mesh: the five services in-process on free ports, with
schemas and a Redis namespace of this module's own. A well-configured mesh is GO; each
fault planted afterwards (and removed again) makes it NO-GO naming exactly that reason."""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.asyncio as redis

from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.server import RunningServer
from tests import harness
from tests.harness import SERVICES, patched_env
from tests.waiting import eventually
from tools.preflight.runner import run

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = "bank,alipay,balance"
# Payout rates and the gateway's declared capacities: every rate within its capacity.
RATES = "bank:100,alipay:200,balance:unlimited"
CAPACITY = {"bank": 150, "alipay": 200}


async def _start(name: str, env: dict[str, str]) -> RunningServer:
    module = importlib.import_module(f"{name}.server")
    with patched_env(env):
        app, settings = module.build()
    return await harness.start_built(app, settings)


@dataclass
class Mesh:
    env: dict[str, str]
    servers: dict[str, RunningServer]
    replica: RunningServer
    db: asyncpg.Connection
    redis: redis.Redis
    waive: list[str]

    async def preflight(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
        out, err = io.StringIO(), io.StringIO()
        code = await run([*self.waive, *args], env or self.env, out, err)
        lines = (out.getvalue() + err.getvalue()).splitlines()
        return code, lines

    def channel(self, service: str) -> grpc.aio.Channel:
        return harness.channel(self.servers[service].address)

    def schema(self, service: str) -> str:
        return self.env[f"{service.upper()}_DB_SCHEMA"]


async def _server_waivers(db: asyncpg.Connection, client: redis.Redis) -> list[str]:
    """What this machine's servers cannot give and the mesh cannot change: waived, so the
    GO line says so, and only when the server really lacks it."""
    waive = []
    if await db.fetchval("SHOW autovacuum") != "on":
        waive += ["--waive", "autovacuum"]
    appendonly = (await client.config_get("appendonly")).get("appendonly")
    save = (await client.config_get("save")).get("save")
    if (appendonly, save) != ("no", ""):
        waive += ["--waive", "redis-persistence"]
    return waive


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[Mesh]:
    tag = uuid.uuid4().hex[:8]
    env = {
        **mesh_env,
        "MESH_KEY_PREFIX": f"{mesh_env['MESH_KEY_PREFIX']}:pf{tag}",
        **{f"{svc.upper()}_DB_SCHEMA": f"{svc.split('_')[0]}_pf{tag}" for svc in SERVICES},
        "WITHDRAW_CHANNELS": CHANNELS, "PAYOUT_CHANNELS": CHANNELS, "GATEWAY_CHANNELS": CHANNELS,
        "PAYOUT_DEFAULT_RATES": RATES, "PAYOUT_RATE_REFRESH_S": "0.2",
        "WITHDRAW_COMPENSATION_ENABLED": "true",
        "WITHDRAW_GATE_TIMEZONE": "Asia/Shanghai",
        "WITHDRAW_GATE_CLOSED_START": "00:00", "WITHDRAW_GATE_CLOSED_END": "10:00",
        "WITHDRAW_GATE_RELEASE_MODULUS": "10", "WITHDRAW_GATE_RELEASE_K": "1",
        "RECON_POLL_MS": "100", "RECON_IDLE_POLL_MS": "300",
        "WITHDRAW_DB_POOL_SIZE": "3", "ACCOUNT_DB_POOL_SIZE": "3", "GATEWAY_DB_POOL_SIZE": "3",
        "RECON_DB_POOL_SIZE": "3", "PAYOUT_DB_POOL_SIZE": "2",
    }
    servers: dict[str, RunningServer] = {}
    for service in SERVICES:
        # withdraw_svc as on the night (gate changes need a second operator); the others in
        # the suite's dev opt-out, so the tests below can set rates directly.
        own = {**env, "ADMIN_FOUR_EYES": "true"} if service == "withdraw_svc" else env
        servers[service] = await _start(service, own)
        env[f"{service.upper()}_ADDR"] = servers[service].address
        admin = servers[service].admin_address
        if admin is not None:
            env[f"{service.upper()}_ADMIN_ADDR"] = admin
    # A second gateway replica, listed in GATEWAY_MOCK_ADDRS: health must ask each replica.
    replica = await _start("gateway_mock", env)
    env["GATEWAY_MOCK_ADDRS"] = replica.address
    async with harness.channel(servers["gateway_mock"].address) as ch:
        stub = gateway_pb2_grpc.GatewayAdminServiceStub(ch)
        for channel, capacity in CAPACITY.items():
            await stub.SetChannelFaults(gateway_pb2.SetChannelFaultsRequest(
                faults=gateway_pb2.ChannelFaults(channel=channel, capacity_per_second=capacity)))
    db = await asyncpg.connect(env["DATABASE_URL"])
    client = open_redis(env["REDIS_URL"], env=env, decode_responses=True)
    m = Mesh(env, servers, replica, db, client, await _server_waivers(db, client))
    await _recon_at_heads(m)
    yield m
    await client.aclose()
    await db.close()
    await replica.stop(0.5)
    for service in reversed(SERVICES):
        await servers[service].stop(0.5)


async def _recon_at_heads(m: Mesh) -> None:
    """Recon has read each feed to its end once (it does so within a poll of starting)."""
    async with m.channel("recon_svc") as ch:
        stub = recon_pb2_grpc.ReconServiceStub(ch)

        async def heads() -> set[str]:
            status = await stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
            return {p.feed for p in status.positions if p.head_time.seconds}

        assert await eventually(heads, lambda h: h >= {"account", "withdraw", "gateway"}, timeout=20.0) >= {
            "account", "withdraw", "gateway"}


def _go_line(m: Mesh) -> str:
    waived = [m.waive[i + 1] for i in range(0, len(m.waive), 2)]
    return f"PREFLIGHT GO (waived: {', '.join(waived)})" if waived else "PREFLIGHT GO"


def _row(lines: list[str], check: str) -> list[str]:
    return next(line.split() for line in lines if line.split()[:1] == [check])


async def test_well_configured_mesh_is_go(mesh: Mesh) -> None:
    code, lines = await mesh.preflight()
    assert lines[-1] == _go_line(mesh), "\n".join(lines)
    assert code == 0
    # One row per check, each OK (or WAIVED only where this machine's server lacks it).
    for check in ("health", "migrations", "gate", "rates", "capacity", "dlq", "compensation",
                  "recon-feeds", "discrepancies", "keys", "certificates", "clock"):
        assert _row(lines, check)[1] == "OK", check
    text = "\n".join(lines)
    assert mesh.replica.address in text  # the replica's health was asked too
    assert "next opens" in text and "CST" in text
    assert "uid mod 10 < 1" in text
    assert "rate 100/s, gateway capacity 150/s" in text


async def test_a_stopped_replica_is_no_go_naming_it(mesh: Mesh) -> None:
    stopped = await _start("gateway_mock", mesh.env)
    env = {**mesh.env, "GATEWAY_MOCK_ADDRS": f"{mesh.replica.address},{stopped.address}"}
    await stopped.stop(0.5)
    code, lines = await mesh.preflight(env=env)
    assert lines[-1] == f"PREFLIGHT NO-GO health: gateway_mock at {stopped.address} is UNREACHABLE"
    assert code == 1


async def test_a_channel_without_rate_is_no_go_naming_it(mesh: Mesh) -> None:
    schema = mesh.schema("payout_svc")
    await mesh.db.execute(f'DELETE FROM "{schema}".channel_config WHERE channel = $1', "alipay")
    async with mesh.channel("payout_svc") as ch:
        stub = payout_pb2_grpc.PayoutAdminServiceStub(ch)

        async def paused() -> bool:
            reply = await stub.GetChannelStats(payout_pb2.GetChannelStatsRequest(channel="alipay"))
            return reply.channels[0].paused

        try:
            assert await eventually(paused, bool, timeout=10.0)
            code, lines = await mesh.preflight()
            assert lines[-1] == ("PREFLIGHT NO-GO rates: channel alipay has no rate "
                                 "(paused: its orders are never paid)")
            assert code == 1
        finally:
            await stub.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="alipay", rate_per_second=200))
    assert (await mesh.preflight())[1][-1] == _go_line(mesh)


async def test_a_rate_above_the_gateway_capacity_is_no_go(mesh: Mesh) -> None:
    async with mesh.channel("payout_svc") as ch:
        stub = payout_pb2_grpc.PayoutAdminServiceStub(ch)
        await stub.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="bank", rate_per_second=180))
        try:
            code, lines = await mesh.preflight()
        finally:
            await stub.SetChannelRate(payout_pb2.SetChannelRateRequest(channel="bank", rate_per_second=100))
    assert lines[-1] == ("PREFLIGHT NO-GO capacity: channel bank rate 180/s exceeds "
                         "the gateway's capacity 150/s")
    assert code == 1


async def test_a_dead_letter_is_no_go_naming_its_channel(mesh: Mesh) -> None:
    key = Keys(mesh.env["MESH_KEY_PREFIX"]).payout_dead_letters("bank")
    await mesh.redis.xadd(key, {"job": b"", "reason": "planted by the test", "attempts": "3"})
    try:
        code, lines = await mesh.preflight()
    finally:
        await mesh.redis.delete(key)
    assert lines[-1] == "PREFLIGHT NO-GO dlq: 1 dead letter(s) on bank"
    assert code == 1


async def test_an_open_discrepancy_is_no_go(mesh: Mesh) -> None:
    schema = mesh.schema("recon_svc")
    row = await mesh.db.fetchval(
        f'INSERT INTO "{schema}".discrepancies (reason, subject, order_id, detail, source) '
        "VALUES ('amount_mismatch', 'pf-order', 'pf-order', 'planted by the test', 'realtime') RETURNING id")
    try:
        code, lines = await mesh.preflight()
    finally:
        await mesh.db.execute(f'DELETE FROM "{schema}".discrepancies WHERE id = $1', row)
    assert lines[-1] == "PREFLIGHT NO-GO discrepancies: 1 open discrepancy"
    assert code == 1


async def test_a_missing_migration_row_is_no_go_naming_schema_and_file(mesh: Mesh) -> None:
    schema = mesh.schema("payout_svc")
    name = "payout_svc/002_explicit_unlimited.sql"
    await mesh.db.execute(f'DELETE FROM "{schema}".schema_migrations WHERE name = $1', name)
    try:
        code, lines = await mesh.preflight()
    finally:
        await mesh.db.execute(f'INSERT INTO "{schema}".schema_migrations (name) VALUES ($1)', name)
    assert lines[-1] == f"PREFLIGHT NO-GO migrations: payout_svc schema {schema} misses {name}"
    assert code == 1


async def test_compensation_off_on_a_replica_is_no_go(mesh: Mesh) -> None:
    off = await _start("withdraw_svc", {**mesh.env, "WITHDRAW_COMPENSATION_ENABLED": "false",
                                        "ADMIN_FOUR_EYES": "true"})
    try:
        env = {**mesh.env, "WITHDRAW_SVC_ADDRS": off.address}
        code, lines = await mesh.preflight(env=env)
    finally:
        await off.stop(0.5)
    assert lines[-1] == ("PREFLIGHT NO-GO compensation: compensation is off on withdraw_svc "
                         f"at {off.address} (WITHDRAW_COMPENSATION_ENABLED)")
    assert code == 1


async def test_four_eyes_off_on_a_replica_is_no_go(mesh: Mesh) -> None:
    off = await _start("withdraw_svc", {**mesh.env, "ADMIN_FOUR_EYES": "false"})
    try:
        env = {**mesh.env, "WITHDRAW_SVC_ADDRS": off.address}
        code, lines = await mesh.preflight(env=env)
    finally:
        await off.stop(0.5)
    assert lines[-1] == ("PREFLIGHT NO-GO four-eyes: four-eyes is off on withdraw_svc "
                         f"at {off.address} (ADMIN_FOUR_EYES)")
    assert code == 1


async def test_the_dev_default_key_and_an_unwaived_failure_are_both_named(mesh: Mesh) -> None:
    env = {**mesh.env, "REWARD_TOKEN_KEYS": "dev:dev-secret", "REWARD_TOKEN_ACTIVE_KEY": "dev"}
    code, lines = await mesh.preflight(env=env)
    assert lines[-1] == "PREFLIGHT NO-GO keys: reward token key dev is the dev default secret"
    assert code == 1


async def test_cli_exit_status_go_and_usage_error(mesh: Mesh) -> None:
    """The real command, as `make preflight` runs it, in a process of its own."""
    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.preflight", *args, cwd=ROOT,
            env={**os.environ, **mesh.env, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await cli(*mesh.waive)
    assert out.splitlines()[-1] == _go_line(mesh), out + err
    assert code == 0
    code, out, err = await cli("--waive", "everything")
    assert code == 2
    assert "--waive: unknown check(s) everything" in err
    assert out == ""


async def test_a_stopped_service_fails_health_and_every_check_that_asks_it(mesh: Mesh) -> None:
    recon = await _start("recon_svc", mesh.env)
    env = {**mesh.env, "RECON_SVC_ADDR": recon.address}
    await recon.stop(0.5)
    code, lines = await mesh.preflight(env=env)
    assert lines[-1] == (f"PREFLIGHT NO-GO health: recon_svc at {recon.address} is UNREACHABLE; "
                         "recon-feeds: recon_svc is UNAVAILABLE; discrepancies: recon_svc is UNAVAILABLE")
    assert code == 1
