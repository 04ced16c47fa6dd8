"""The gate commands README.md gives operators, run with the real grpcurl binary against
a real withdraw_svc's admin port over mutual TLS, under four-eyes: one operator proposes
(ProposeGateChange), another approves (ApproveGateChange); the update mask as grpcurl takes
it ({"paths": [...]}), a partial change, turning the automatic release on, the refusal of a
request without a mask, and of a direct SetGate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meshkit.pki import CertDir
from tests.integration.withdraw_support import WdMesh, start_mesh

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
ADMIN = "mesh.withdraw.v1.WithdrawAdminService"
SET_GATE = f"{ADMIN}/SetGate"
PROPOSE = f"{ADMIN}/ProposeGateChange"
APPROVE = f"{ADMIN}/ApproveGateChange"


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={"ADMIN_FOUR_EYES": "true"})
    yield m
    await m.stop()


async def grpcurl(address: str, method: str, data: dict[str, Any],
                  caller: str = "operator-alice") -> subprocess.CompletedProcess[str]:
    """As `caller`: its certificate from this run's MESH_CERTS_DIR."""
    certs = CertDir.from_env()
    tls = ["-cacert", str(certs.ca), "-cert", str(certs.cert(caller)), "-key", str(certs.key(caller))]
    argv = [GRPCURL, *tls, "-max-time", "10", "-d", json.dumps(data), address, method]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30,
                                   check=False)


def admin_addr(mesh: WdMesh) -> str:
    address = mesh.withdraws[0].admin_address
    assert address is not None
    return address


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}{done.stderr}"
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


async def set_gate(mesh: WdMesh, data: dict[str, Any]) -> dict[str, Any]:
    """The README's two commands: operator-alice proposes, operator-bob approves the change id."""
    proposed = answer(await grpcurl(admin_addr(mesh), PROPOSE, {"request": data}, caller="operator-alice"))
    change_id = proposed["change"]["review"]["change_id"]
    approved = answer(await grpcurl(admin_addr(mesh), APPROVE, {"change_id": change_id},
                                    caller="operator-bob"))
    assert approved["change"]["review"]["state"] == "CHANGE_STATE_APPLIED"
    config: dict[str, Any] = approved["config"]
    return config


async def test_the_readme_set_gate_commands(mesh: WdMesh) -> None:
    whole = await set_gate(mesh, {
        "config": {"timezone": "Asia/Shanghai", "closed_start": "19:00", "closed_end": "01:00",
                   "release_modulus": 10, "release_k": 0},
        "update_mask": {"paths": ["*"]}, "reason": "campaign night",
    })
    assert (whole["closed_start"], whole["release_modulus"]) == ("19:00", 10)

    opened = await set_gate(mesh, {
        "config": {"release_k": 1}, "update_mask": {"paths": ["release_k"]}, "reason": "first cohort",
    })
    assert opened["release_k"] == 1 and opened["closed_start"] == "19:00"

    auto = await set_gate(mesh, {
        "config": {"auto_release": True, "auto_release_drain_seconds": 120},
        "update_mask": {"paths": ["auto_release", "auto_release_drain_seconds"]},
        "expected_version": opened["version"], "reason": "release by channel headroom",
    })
    assert auto["auto_release"] is True and auto["auto_release_drain_seconds"] == 120
    assert (auto["release_k"], auto["closed_end"]) == (1, "01:00")

    refused = await grpcurl(admin_addr(mesh), PROPOSE, {"request": {"config": {"release_k": 5}}})
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "InvalidArgument" in output
    assert 'update_mask is required; use "*" to replace the whole configuration' in output

    direct = await grpcurl(admin_addr(mesh), SET_GATE, {
        "config": {"release_k": 5}, "update_mask": {"paths": ["release_k"]}, "reason": "direct"})
    assert direct.returncode != 0
    assert "FailedPrecondition" in direct.stdout + direct.stderr
    assert "four-eyes: propose and approve" in direct.stdout + direct.stderr
