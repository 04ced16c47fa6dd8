"""The campaign-night drill, short (a few hundred orders, each fault once), on a private
mesh of five processes: its own database, Redis key prefix and free ports, started and
killed through tools/meshctl.py exactly as `make drill` does on the `make up` mesh. Private,
because the drill kills services, wipes the Redis namespace and rewrites the gate: nothing
another e2e test relies on may see that.

The drill's verdict comes from the services' own RPCs; this test then checks that the
figures behind it add up and that every fault really happened once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import create_database, database_env, drop_database
from tools import drill
from tools import meshctl as mesh

pytestmark = pytest.mark.e2e

# The whole test, mesh start and stop included, must stay well inside this on 2 cores.
BUDGET_S = 150.0
DRILL_TIMEOUT_S = 120.0
GRACE_S = 3.0


@dataclass(frozen=True)
class PrivateMesh:
    env: dict[str, str]
    layout: mesh.Layout

    def log_tails(self) -> str:
        return "\n".join(f"--- {s} ---\n{mesh.log_tail(s, self.layout, 12)}" for s in mesh.SERVICES)


@pytest.fixture(scope="module")
async def drill_mesh(mesh_env: dict[str, str],
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateMesh]:
    database_url = await create_database(mesh_env["DATABASE_URL"])
    env = {
        **database_env(database_url),
        "REDIS_URL": mesh_env["REDIS_URL"],
        "MESH_KEY_PREFIX": f"drill-{uuid.uuid4().hex[:10]}",
        "REWARD_TOKEN_KEYS": mesh_env["REWARD_TOKEN_KEYS"],
        "REWARD_TOKEN_ACTIVE_KEY": mesh_env["REWARD_TOKEN_ACTIVE_KEY"],
        "SESSION_TOKEN_KEYS": mesh_env["SESSION_TOKEN_KEYS"],
        "SESSION_TOKEN_ACTIVE_KEY": mesh_env["SESSION_TOKEN_ACTIVE_KEY"],
        "MESH_SHUTDOWN_GRACE_S": str(GRACE_S),
        # Short timers so each phase of the drill takes seconds, not minutes: gate changes
        # picked up within 1 s, the outbox relayed every 100 ms, a killed consumer's
        # messages reclaimed after 1 s.
        "WITHDRAW_GATE_REFRESH_S": "1",
        "WITHDRAW_RELAY_INTERVAL_MS": "100",
        "WITHDRAW_PAGE_CREDIT_DEADLINE_MS": "3000",
        "PAYOUT_CLAIM_IDLE_MS": "1000",
        # Recon judges an order this long after its last change. A refund owed while
        # account_svc is down is retried with backoff 1, 2, 4 s..., so after the 2 s outage
        # of the drill it can land ~7 s after the order failed; a shorter grace reports
        # missing_refund for refunds that are merely late (and keeps them open).
        "RECON_GRACE_S": "8",
        "RECON_AUDIT_S": "2",
        # A confirm lost with its killed withdraw_svc is settled 5 s on, not after a minute:
        # the drill fails any order the compensation job has to move.
        "WITHDRAW_DEDUCT_RESOLVE_AFTER_S": "5",
        "WITHDRAW_DEDUCT_RESOLVE_INTERVAL_S": "1",
        # PostgreSQL's connection slots are shared with the session's other meshes and tests.
        "WITHDRAW_DB_POOL_SIZE": "6",
        "ACCOUNT_DB_POOL_SIZE": "5",
        "GATEWAY_DB_POOL_SIZE": "3",
        "RECON_DB_POOL_SIZE": "3",
        "PAYOUT_DB_POOL_SIZE": "2",
    }
    mesh.on_free_ports(env, mesh.SERVICES)
    for service in mesh.SERVICES:
        env[f"{service.upper()}_METRICS_PORT"] = "0"
    layout = mesh.Layout(Path(tmp_path_factory.mktemp("drill-mesh")))
    full = mesh.service_env(env)
    try:
        await asyncio.to_thread(mesh.up, env, layout, mesh.SERVICES, 30.0)
    except mesh.MeshError as exc:
        await asyncio.to_thread(mesh.down, layout, mesh.SERVICES, 2.0)
        await drop_database(mesh_env["DATABASE_URL"], database_url)
        pytest.fail(f"the drill's private mesh did not come up: {exc}")
    try:
        yield PrivateMesh(full, layout)
    finally:
        await asyncio.to_thread(mesh.down, layout, mesh.SERVICES, GRACE_S + 2.0)
        await drop_database(mesh_env["DATABASE_URL"], database_url)


async def test_short_drill_passes_and_adds_up(drill_mesh: PrivateMesh, tmp_path: Path) -> None:
    started = time.monotonic()
    lines: list[str] = []
    options = drill.DrillOptions(
        users=48, rate=24.0, duration_s=10.0, mix="page=1,confirm=2,order=1",
        # Above the night's 1%, so that ~200 payouts surely include definitive failures and
        # the refund path is part of the verdict.
        definitive_rate=0.04,
        release_steps=(5, 10), compensation_min_age_s=1,
        settle_timeout_s=40.0, recon_timeout_s=20.0, gate_timeout_s=8.0, restart_timeout_s=20.0,
        report_dir=tmp_path, environ=drill_mesh.env, layout=drill_mesh.layout, progress=False,
    )
    try:
        result = await asyncio.wait_for(drill.run_drill(options, say=lines.append), timeout=DRILL_TIMEOUT_S)
    except TimeoutError:
        pytest.fail(f"the drill did not finish within {DRILL_TIMEOUT_S:.0f}s\n" + "\n".join(lines[-30:])
                    + "\n" + drill_mesh.log_tails())
    transcript = "\n".join(lines)
    assert result.passed, f"{result.line}\n{transcript}\n{drill_mesh.log_tails()}"

    assert result.line == (
        f"DRILL PASS orders={result.orders} succeeded={result.succeeded} failed={result.failed} "
        "lost_fen=0 double_payouts=0 discrepancies=0"
    )
    assert result.orders == result.succeeded + result.failed
    # ~240 confirms are sent; those refused while withdraw_svc or account_svc is down
    # create no order.
    assert result.orders >= 100, f"only {result.orders} orders: the load did not run\n{transcript}"
    assert result.failed > 0, "no FAILED order: the definitive failures and refunds went untested"
    checks = result.checks
    assert checks["funded_fen"] == checks["balances_fen"] + checks["succeeded_fen"], checks
    assert checks["gateway_succeeded_fen"] == checks["succeeded_fen"], checks
    expected_states = {"SUCCEEDED": result.succeeded, "FAILED": result.failed}
    assert checks["orders_by_state"] == {k: v for k, v in expected_states.items() if v}
    assert set(checks["failed_refund_states"]) <= {"REFUNDED", "VOIDED"}, checks["failed_refund_states"]

    # Every fault of the night happened, each exactly once, and every killed service came back.
    whats = [str(e["what"]) for e in result.timeline]

    def count(prefix: str) -> int:
        return sum(1 for w in whats if w.startswith(prefix))

    for service in drill.KILLED:
        assert count(f"SIGKILL {service} ") == 1, whats
        assert count(f"{service} restarted ") == 1, whats
    assert count("Redis wiped") == 2, whats
    assert count("PostgreSQL cut") == 1, whats
    assert count("PostgreSQL reachable again") == 1, whats
    # The normal paths finished every order: nothing waited for the compensation job.
    assert checks["orders_moved_by_compensation"] == 0, checks
    assert count("gateway faults on every channel") == 1, whats
    assert count("closed gate refuses") == 1, whats
    assert count("k=5: released uid") == 1, whats

    assert result.report_dir is not None
    report = json.loads((result.report_dir / "report.json").read_text())
    assert report["verdict_line"] == result.line
    assert [e["what"] for e in report["timeline"]] == whats
    for name in ("throughput.png", "latency.png", "orders.png", "backlog.png", "payout_rate.png"):
        assert (result.report_dir / name).stat().st_size > 1000, name
    assert "DRILL PASS" in (result.report_dir / "report.html").read_text()

    elapsed = time.monotonic() - started
    assert elapsed < BUDGET_S, f"the short drill took {elapsed:.0f}s"
