"""Mutual TLS is the default: a service without certificates refuses to start (saying how
to get them), a partial configuration refuses naming what is missing, plaintext needs an
explicit MESH_INSECURE=1 and warns. The caller is who its certificate says (SAN URI, else
CN, else anonymous), never who it says it is."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.dialer import Dialer
from meshkit.identity import CALLER_HEADER
from meshkit.pki import CertDir
from meshkit.server import RunningServer
from tests.integration.withdraw_support import _start
from tools import certs as certs_tool
from withdraw_svc.settings import Settings

TLS_VARS = ("MESH_TLS_CA", "MESH_TLS_CERT", "MESH_TLS_KEY", "MESH_CERTS_DIR", "MESH_INSECURE")


@pytest.fixture(scope="module")
def odd_certs(mesh_env: dict[str, str]) -> CertDir:
    """This run's CA, plus certificates without a SAN URI (CN only) and without any name."""
    certs = CertDir(Path(mesh_env["MESH_CERTS_DIR"]))
    certs_tool.issue(certs, "operator-cn", uri=False)
    certs_tool.issue(certs, "nameless", uri=False, common_name="")
    return certs


def _withdraw_env(mesh_env: dict[str, str], tag: str) -> dict[str, str]:
    return {
        **mesh_env,
        "WITHDRAW_SVC_DB_SCHEMA": f"withdraw_tls{tag}",
        "MESH_KEY_PREFIX": f"{mesh_env['MESH_KEY_PREFIX']}:tls{tag}",
        "WITHDRAW_COMPENSATION_ENABLED": "false",
        "WITHDRAW_DB_POOL_SIZE": "2",
    }


@pytest.fixture(scope="module")
async def tls_withdraw(mesh_env: dict[str, str], odd_certs: CertDir) -> AsyncIterator[RunningServer]:
    running = await _start("withdraw_svc", _withdraw_env(mesh_env, "a"))
    yield running
    await running.stop(1.0)


async def _set_gate_as(running: RunningServer, channel: grpc.aio.Channel, reason: str) -> str:
    """SetGate (unchanged config) through `channel`; returns the actor the audit records."""
    admin = withdraw_pb2_grpc.WithdrawAdminServiceStub(channel)
    try:
        gate = (await admin.GetGate(withdraw_pb2.GetGateRequest(uid=1), timeout=10)).config
        await admin.SetGate(withdraw_pb2.SetGateRequest(config=gate, reason=reason,
                                                        update_mask=FieldMask(paths=["*"])),
                            metadata=((CALLER_HEADER, "approver-carol"),), timeout=10)
        audit = await admin.ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=1), timeout=10)
    finally:
        await channel.close()
    assert audit.entries[0].reason == reason
    return audit.entries[0].actor


async def test_the_san_uri_names_the_caller_not_the_header(tls_withdraw: RunningServer) -> None:
    channel = Dialer.from_env().routed(tls_withdraw.address, tls_withdraw.admin_address, "operator-bob")
    assert await _set_gate_as(tls_withdraw, channel, "san uri") == "operator-bob"


async def test_a_certificate_without_san_uri_is_known_by_its_cn(tls_withdraw: RunningServer,
                                                                odd_certs: CertDir) -> None:
    # operator-cn has no SAN URI: its CN is the fallback identity (an operator by prefix).
    channel = Dialer(odd_certs).routed(tls_withdraw.address, tls_withdraw.admin_address, "operator-cn")
    assert await _set_gate_as(tls_withdraw, channel, "cn fallback") == "operator-cn"


async def test_a_certificate_naming_nobody_is_anonymous_and_refused(tls_withdraw: RunningServer,
                                                                    odd_certs: CertDir) -> None:
    assert tls_withdraw.admin_address is not None
    channel = Dialer(odd_certs).channel(tls_withdraw.admin_address, "nameless")
    admin = withdraw_pb2_grpc.WithdrawAdminServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        # The header claims an operator; with TLS on it is not read.
        await admin.GetGate(withdraw_pb2.GetGateRequest(uid=1), metadata=((CALLER_HEADER, "operator-alice"),),
                            timeout=10)
    await channel.close()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        "caller anonymous may not call /mesh.withdraw.v1.WithdrawAdminService/GetGate")


@pytest.mark.parametrize(("given", "missing"), [
    ({"MESH_TLS_CA": "ca.pem"}, "MESH_TLS_CERT, MESH_TLS_KEY unset"),
    ({"MESH_TLS_CERT": "c.pem", "MESH_TLS_KEY": "c.key"}, "MESH_TLS_CA unset"),
    ({"MESH_TLS_CA": "ca.pem", "MESH_TLS_KEY": "c.key"}, "MESH_TLS_CERT unset"),
])
def test_a_partial_tls_configuration_refuses_to_start_naming_what_is_missing(
        monkeypatch: pytest.MonkeyPatch, given: dict[str, str], missing: str) -> None:
    for name in TLS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=f"partial TLS configuration: {missing}"):
        Settings.from_env()


def test_no_tls_configuration_refuses_to_start_saying_how_to_get_certificates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TLS_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as refused:
        Settings.from_env()
    assert "make certs" in str(refused.value) and "MESH_INSECURE=1" in str(refused.value)


@pytest.mark.parametrize("raw", ["ture", "2", "y"])
def test_mesh_insecure_is_a_strict_boolean(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    for name in TLS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MESH_INSECURE", raw)
    with pytest.raises(SystemExit, match=f"MESH_INSECURE={raw!r} is not a boolean"):
        Settings.from_env()


def test_missing_certificate_files_refuse_to_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in TLS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MESH_CERTS_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=f"TLS files missing: {tmp_path / 'ca.pem'}"):
        Settings.from_env()


async def test_mesh_insecure_serves_plaintext_and_warns(
        mesh_env: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_CERTS_DIR")
    env = {k: v for k, v in _withdraw_env(mesh_env, "i").items() if k != "MESH_CERTS_DIR"}
    with caplog.at_level(logging.WARNING, logger="meshkit.server"):
        running = await _start("withdraw_svc", {**env, "MESH_INSECURE": "1"})
    try:
        warnings = [r.getMessage() for r in caplog.records if r.name == "meshkit.server"]
        assert any(w.startswith("MESH_INSECURE=1: plaintext") and "x-mesh-caller" in w for w in warnings)
        assert running.admin_address is not None
        # Plaintext: the header names the caller, and the policy still applies to that name.
        plain = Dialer(None).routed(running.address, running.admin_address)
        assert await _set_gate_as(running, plain, "insecure") == "operator-alice"
        stranger = grpc.aio.insecure_channel(running.admin_address)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await withdraw_pb2_grpc.WithdrawAdminServiceStub(stranger).GetGate(withdraw_pb2.GetGateRequest(),
                                                                               timeout=10)
        await stranger.close()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await running.stop(1.0)
