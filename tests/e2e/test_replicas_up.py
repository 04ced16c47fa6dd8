"""`make up REPLICAS=2` as tools/meshctl.py does it: two processes of every service on
distinct ports, pid and log files per replica, every peer dialling both replicas; a
withdrawal settles through them, and still settles with one withdraw_svc replica killed;
`down` stops all ten, each exiting 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.withdraw.v1 import withdraw_pb2
from tests import harness
from tools import demo
from tools import meshctl as mesh

REPLICAS = 2
GRACE_S = 5.0


@pytest.fixture
async def replicated(mesh_env: dict[str, str],
                     tmp_path: Path) -> AsyncIterator[tuple[dict[str, str], mesh.Layout]]:
    base = mesh_env["DATABASE_URL"]
    url = await harness.create_database(base)
    env = {**mesh_env, "DATABASE_URL": url, "MESH_KEY_PREFIX": f"{mesh_env['MESH_KEY_PREFIX']}:rep",
           "MESH_SHUTDOWN_GRACE_S": str(GRACE_S), "WITHDRAW_RELAY_INTERVAL_MS": "100"}
    for name in ("ACCOUNT", "WITHDRAW", "GATEWAY", "RECON", "PAYOUT"):
        env[f"{name}_DB_POOL_SIZE"] = "3"
    mesh.on_free_replica_ports(env, mesh.SERVICES, REPLICAS)
    for service in mesh.SERVICES:
        env[f"{service.upper()}_METRICS_PORT"] = "0"
    layout = mesh.Layout(tmp_path / "mesh")
    try:
        yield env, layout
    finally:
        mesh.down(layout, grace=GRACE_S + 2.0)
        await harness.drop_database(base, url)


async def test_two_replicas_of_each_service(replicated: tuple[dict[str, str], mesh.Layout]) -> None:
    env, layout = replicated
    pids = mesh.up(env, layout, timeout=60.0, replicas=REPLICAS)
    instances = [mesh.instance_name(s, k) for s in mesh.SERVICES for k in range(REPLICAS)]
    assert sorted(pids) == sorted(instances)
    assert len(set(pids.values())) == len(instances)
    for instance in instances:
        assert layout.pid_file(instance).is_file()
        assert layout.log_file(instance).is_file()
    full = mesh.service_env(env, REPLICAS)
    rows = mesh.status(full, layout)
    assert {r.service for r in rows} == set(instances)
    assert all(r.health == mesh.SERVING for r in rows), rows
    # Distinct addresses, replica 1 at port + 2000.
    assert len({r.address for r in rows}) == len(instances)
    for service in mesh.SERVICES:
        assert mesh.port_of(f"{service}-1", full) == int(env[f"{service.upper()}_PORT"]) + 2000

    addresses = {peer: full[f"{peer.upper()}_ADDRS"] for peer in demo.PEERS}
    assert all(len(a.split(",")) == REPLICAS for a in addresses.values())
    first = await demo.run_withdrawal(addresses, environ=full, amount_fen=100, reward_fen=500)
    assert first.order.state == withdraw_pb2.ORDER_STATE_SUCCEEDED, first.order

    # One withdraw_svc replica dies: the app's channel and every peer's use the other.
    assert mesh.kill("withdraw_svc", layout) == pids["withdraw_svc"]
    second = await demo.run_withdrawal(addresses, environ=full, amount_fen=100, reward_fen=500)
    assert second.order.state == withdraw_pb2.ORDER_STATE_SUCCEEDED, second.order

    codes = mesh.down(layout, grace=GRACE_S + 2.0)
    # The killed one has no process left to stop (None); the other nine drained and exited 0.
    assert codes == {**dict.fromkeys(instances, 0), "withdraw_svc": None}, codes
