"""The whole mesh as five processes, once per test session, on free ports, against this
run's fresh database and Redis key prefix (tests/conftest.py::mesh_env). Started and
stopped with tools/meshctl.py, exactly as `make up` / `make down` do; the teardown checks
that every service drains on SIGTERM and exits 0 within its grace period."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools import demo
from tools import meshctl as mesh

# Short drains keep the suite fast; a service that cannot finish in time is a failure.
GRACE_S = 5.0
UP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class E2EMesh:
    env: dict[str, str]
    layout: mesh.Layout
    pids: dict[str, int]

    def addr(self, service: str) -> str:
        return mesh.addr_of(service, self.env)

    def admin_addr(self, service: str) -> str:
        return mesh.admin_addr_of(service, self.env)

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {s} ---\n{mesh.log_tail(s, self.layout, 15)}" for s in mesh.SERVICES
        )


@pytest.fixture(scope="session")
def e2e_mesh(mesh_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EMesh]:
    env = dict(mesh_env)
    env["MESH_SHUTDOWN_GRACE_S"] = str(GRACE_S)
    # The page's force-credit is a weak dependency with a 200 ms deadline; on a busy CI
    # machine a cold first call can miss it, and the page balance assertions would flake.
    env["WITHDRAW_PAGE_CREDIT_DEADLINE_MS"] = "3000"
    env["WITHDRAW_RELAY_INTERVAL_MS"] = "100"
    # As in production: the drill and the tools change the gate by propose + approve.
    env["ADMIN_FOUR_EYES"] = "true"
    # One order needs few connections; the suite shares PostgreSQL's 100 with other meshes.
    for name in ("ACCOUNT", "WITHDRAW", "GATEWAY", "RECON"):
        env[f"{name}_DB_POOL_SIZE"] = "4"
    mesh.on_free_ports(env, mesh.SERVICES)
    for service in mesh.SERVICES:
        env[f"{service.upper()}_METRICS_PORT"] = "0"
    layout = mesh.Layout(Path(tmp_path_factory.mktemp("mesh")))
    try:
        pids = mesh.up(env, layout, timeout=UP_TIMEOUT_S)
    except mesh.MeshError as exc:
        mesh.down(layout, grace=2.0)
        pytest.fail(f"the mesh did not come up: {exc}")
    running = E2EMesh(mesh.service_env(env), layout, pids)
    yield running
    # Every service must drain and exit 0 on SIGTERM, within the grace period.
    codes = mesh.down(layout, grace=GRACE_S + 2.0)
    assert codes == dict.fromkeys(reversed(mesh.SERVICES), 0), (
        f"exit codes after SIGTERM: {codes}\n{running.log_tails()}"
    )


@pytest.fixture(scope="session")
async def happy_order(e2e_mesh: E2EMesh) -> AsyncIterator[demo.Withdrawal]:
    """One withdrawal of 100 fen driven through the running mesh (shared by the e2e tests)."""
    addresses = {peer: e2e_mesh.addr(peer) for peer in demo.PEERS}
    yield await demo.run_withdrawal(addresses, environ=e2e_mesh.env, amount_fen=100, reward_fen=500)
