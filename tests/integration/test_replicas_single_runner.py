"""Two withdraw_svc replicas (and two recon_svc) against one schema: each single-runner job
runs on exactly one of them (the lease holder, and only there do its loops tick); when the
leader is cut off from PostgreSQL (a partition: its renewals fail, it gives nothing up)
or SIGKILLed, the other takes the job over within 5 s; the daily batch and the compensation
run on one replica at a time. Coalesced deducts and batched
payouts stay right with both replicas confirming for the same user at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.db import create_pool
from meshkit.leader import LeaseStore
from meshkit.server import RunningServer
from meshkit.status import reason_of
from meshkit.timeconv import utcnow
from tests import harness
from tests.integration.test_db_outage import target_of, via
from tests.integration.withdraw_support import WdMesh, _start, start_mesh
from tests.waiting import eventually
from tools.faultproxy import FaultProxy
from tools.meshctl import own_certs
from withdraw_svc.server import LEASES

TAKEOVER_BOUND_S = 5.0
ROOT = Path(__file__).resolve().parents[2]
LED = ("withdraw-auto-release", "withdraw-stuck-orders")


def _app(running: RunningServer) -> Any:
    return running.app


async def _holders(pool: asyncpg.Pool, names: tuple[str, ...]) -> dict[str, str | None]:
    store = LeaseStore(pool)
    return {name: await store.holder(name) for name in names}


@pytest.fixture
async def pair(mesh_env: dict[str, str]) -> AsyncIterator[tuple[WdMesh, FaultProxy]]:
    proxy = FaultProxy(*target_of(mesh_env["DATABASE_URL"], 5432))
    await proxy.start()
    m = await start_mesh(mesh_env, withdraw=False, payout=False, extra={
        "WITHDRAW_AUTO_RELEASE_INTERVAL_S": "0.1", "WITHDRAW_STUCK_CHECK_INTERVAL_S": "1"})
    try:
        yield m, proxy
    finally:
        await proxy.heal()
        await m.stop()
        await proxy.stop()


async def test_one_withdraw_replica_runs_each_job_and_the_other_takes_over(
        pair: tuple[WdMesh, FaultProxy]) -> None:
    m, proxy = pair
    # The first replica reaches PostgreSQL through the proxy, so that it can be cut off.
    first = await m.start_withdraw({"DATABASE_URL": via(m.env["DATABASE_URL"], proxy.port)})
    lead = _app(first)
    await eventually(lambda: all(lead.leases[n].held() for n in LED), what="the first replica leads")
    second = await m.start_withdraw()
    other = _app(second)
    assert await _holders(m.pool, LED) == {n: lead.leases[n].holder for n in LED}
    # Only the holder's loop runs: its ticks move, the other's stay at 0.
    ticks = lead.auto_release.ticks
    await eventually(lambda: lead.auto_release.ticks > ticks + 5, what="the leader's auto-release ticks")
    assert other.auto_release.ticks == 0
    assert not any(other.leases[n].held() for n in LED)

    # A partition: the leader's connections to PostgreSQL are cut; it releases nothing.
    await proxy.cut()
    await eventually(lambda: all(other.leases[n].held() for n in LED), timeout=TAKEOVER_BOUND_S,
                     what="the second replica takes every job over")
    assert await _holders(m.pool, LED) == {n: other.leases[n].holder for n in LED}
    # The cut-off replica's own clock ended its term: it stopped, without hearing anything.
    assert not any(lead.leases[n].held() for n in LED)
    stopped_at = lead.auto_release.ticks
    ticks = other.auto_release.ticks
    await eventually(lambda: other.auto_release.ticks > ticks + 5, what="the new leader's ticks")
    assert lead.auto_release.ticks == stopped_at
    # Healed, the old leader finds the lease taken and stays a follower.
    await proxy.heal()
    await eventually(lambda: other.auto_release.ticks > ticks + 15, what="the new leader keeps it")
    assert lead.auto_release.ticks == stopped_at
    assert await _holders(m.pool, LED) == {n: other.leases[n].holder for n in LED}


async def test_compensation_runs_on_one_replica_at_a_time(mesh_env: dict[str, str]) -> None:
    m = await start_mesh(mesh_env)
    try:
        await m.start_withdraw()
        first, second = (_app(w) for w in m.withdraws)
        assert "withdraw-compensation" in LEASES
        run = withdraw_pb2.RunCompensationRequest(min_age_seconds=0, override_min_age=True)
        # While a run holds the job on the first replica, neither replica starts another.
        async with first.compensation_lock.try_hold() as held:
            assert held
            for index in (1, 0):
                reply = await m.admin(index).RunCompensation(run, timeout=30)
                assert not reply.ran, index
        # Given up at the run's end: the second replica runs at once, not a term later.
        assert (await m.admin(1).RunCompensation(run, timeout=30)).ran
        assert not any(a.compensation_lock.held() for a in (first, second))
    finally:
        await m.stop()


async def test_two_replicas_coalescing_for_one_user_keep_the_ledger_right(mesh_env: dict[str, str]) -> None:
    m = await start_mesh(mesh_env, payout=True, extra={
        "WITHDRAW_DEDUCT_LINGER_MS": "5", "PAYOUT_DEFAULT_RATES": "bank:unlimited"})
    try:
        await m.start_withdraw()
        uid, method = await m.user(balance_fen=60 * 100)
        # 80 confirms of 100 fen for one uid, alternating replicas: 60 fit the balance.
        calls = [m.confirm(uid, method, 100, request_id=f"r-{i}", index=i % 2) for i in range(80)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        ok = [r for r in results if isinstance(r, withdraw_pb2.ConfirmWithdrawResponse)]
        assert len(ok) == 60, [r for r in results if not isinstance(r, withdraw_pb2.ConfirmWithdrawResponse)]
        # Both replicas coalesced deducts of their own.
        for app in (_app(w) for w in m.withdraws):
            assert app.confirm.deducts.items >= 40
            assert app.confirm.deducts.batches < app.confirm.deducts.items
        order_ids = [r.order.order_id for r in ok]

        async def all_settled() -> bool:
            states = {r["state"] for r in await m.order_rows(uid)}
            return states <= {"SUCCEEDED", "FAILED"}
        await eventually(all_settled, timeout=60, what="every order settled")
        states = [r["state"] for r in await m.order_rows(uid)]
        assert states.count("SUCCEEDED") == 60 and states.count("FAILED") == 20
        for order_id in order_ids:
            assert await m.entries(order_id) == ["DEBIT"]
        assert await m.balance(uid) == 0
        await m.ledger_ok([uid])
    finally:
        await m.stop()


def _recon_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {**env, **own_certs("recon_svc", env), "RECON_SVC_PORT": "0", "RECON_SVC_METRICS_PORT": "0",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")])}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "recon_svc"], cwd=ROOT, env=full,
                                stdout=out, stderr=subprocess.STDOUT)


async def test_recon_feeds_are_followed_by_one_replica_and_taken_over_after_sigkill(
        mesh_env: dict[str, str], tmp_path: Path) -> None:
    m = await start_mesh(mesh_env)
    env = {**m.env, "RECON_SVC_DB_SCHEMA": f"recon_wd{m.tag}", "RECON_DB_POOL_SIZE": "3"}
    proc = _recon_process(env, tmp_path / "recon.log")
    inproc: RunningServer | None = None
    pool = await create_pool(env["DATABASE_URL"], env["RECON_SVC_DB_SCHEMA"], min_size=1, max_size=2)
    assert pool is not None
    try:
        async def subprocess_leads() -> dict[str, str | None] | None:
            try:
                names = tuple(r["name"] for r in await pool.fetch("SELECT name FROM leases"))
            except asyncpg.UndefinedTableError:
                return None
            holders = await _holders(pool, names)
            return holders if len(holders) >= 3 and all(holders.values()) else None
        held = await eventually(subprocess_leads, timeout=30, what="the recon subprocess leads every feed")
        inproc = await _start("recon_svc", env)
        app = _app(inproc)
        names = tuple(f"recon-feed-{f}" for f in app.leases)
        assert set(names) == set(held)
        assert str(proc.pid) in "".join(h or "" for h in held.values())
        assert not any(lease.held() for lease in app.leases.values())
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        await eventually(lambda: all(lease.held() for lease in app.leases.values()),
                         timeout=TAKEOVER_BOUND_S, what="the in-process replica takes every feed over")
        assert await _holders(pool, names) == {f"recon-feed-{f}": lease.holder
                                               for f, lease in app.leases.items()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if inproc is not None:
            await inproc.stop(1.0)
        await pool.close()
        await m.stop()


async def test_the_daily_batch_runs_on_one_recon_replica_at_a_time(mesh_env: dict[str, str]) -> None:
    m = await start_mesh(mesh_env)
    env = {**m.env, "RECON_SVC_DB_SCHEMA": f"recon_wd{m.tag}", "RECON_DB_POOL_SIZE": "3"}
    replicas = [await _start("recon_svc", env) for _ in range(2)]
    channels = [harness.channel(r) for r in replicas]
    try:
        stubs = [recon_pb2_grpc.ReconServiceStub(c) for c in channels]
        day = recon_pb2.RunDailyReconRequest(date=utcnow().date().isoformat())
        # A run under way on the first replica (it holds the lease for the run's length).
        async with _app(replicas[0]).daily.runner.try_hold() as held:
            assert held
            for stub in reversed(stubs):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.RunDailyRecon(day, timeout=30)
                assert refused.value.code() == grpc.StatusCode.ABORTED
                assert reason_of(refused.value) == "DAILY_BATCH_RUNNING"
        # Given up when the run ends: the other replica runs at once, not a term later.
        report = (await stubs[1].RunDailyRecon(day, timeout=60)).report
        assert report.date == day.date
    finally:
        for channel in channels:
            await channel.close()
        for running in replicas:
            await running.stop(1.0)
        await m.stop()
