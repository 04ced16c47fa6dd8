"""The SetGate commands README.md gives operators, run with the real grpcurl binary against
a real withdraw_svc's admin port, as operator-alice over mutual TLS: the update mask as
grpcurl takes it ({"paths": [...]}), a partial change, turning the automatic release on,
and the refusal of a request without a mask."""

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
from tests.integration.test_withdraw_support import WdMesh, start_mesh

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
SET_GATE = "mesh.withdraw.v1.WithdrawAdminService/SetGate"


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env)
    yield m
    await m.stop()


async def grpcurl(address: str, method: str, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    certs = CertDir.from_env()
    tls = ["-cacert", str(certs.ca), "-cert", str(certs.cert("operator-alice")),
           "-key", str(certs.key("operator-alice"))]
    argv = [GRPCURL, *tls, "-max-time", "10", "-d", json.dumps(data), address, method]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30,
                                   check=False)


def admin_addr(mesh: WdMesh) -> str:
    address = mesh.withdraws[0].admin_address
    assert address is not None
    return address


async def set_gate(mesh: WdMesh, data: dict[str, Any]) -> dict[str, Any]:
    done = await grpcurl(admin_addr(mesh), SET_GATE, data)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}{done.stderr}"
    config: dict[str, Any] = json.loads(done.stdout)["config"]
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

    refused = await grpcurl(admin_addr(mesh), SET_GATE, {"config": {"release_k": 5}})
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "InvalidArgument" in output
    assert 'update_mask is required; use "*" to replace the whole configuration' in output
