"""Mutual TLS is switched on by configuration alone (MESH_TLS_CA/CERT/KEY): the same
service code then refuses plaintext and certificate-less callers, and takes the caller's
identity from its certificate, not from what the caller says about itself."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.server import RunningServer
from meshkit.settings import TlsSettings
from meshkit.transport import dial
from tests import harness
from tests.integration.test_withdraw_support import _start


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(directory: Path, name: str, common_name: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}", cwd=directory)
    (directory / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
             cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=mesh-test-ca",
             cwd=directory)
    _issue(directory, "withdraw", "withdraw_svc")
    _issue(directory, "alice", "ops-alice")
    return directory


@pytest.fixture(scope="module")
async def tls_withdraw(mesh_env: dict[str, str], pki: Path) -> AsyncIterator[RunningServer]:
    env = {
        **mesh_env,
        "WITHDRAW_SVC_DB_SCHEMA": "withdraw_tls",
        "MESH_KEY_PREFIX": f"{mesh_env['MESH_KEY_PREFIX']}:tls",
        "WITHDRAW_COMPENSATION_ENABLED": "false",
        "WITHDRAW_DB_POOL_SIZE": "2",
        "MESH_TLS_CA": str(pki / "ca.pem"),
        "MESH_TLS_CERT": str(pki / "withdraw.pem"),
        "MESH_TLS_KEY": str(pki / "withdraw.key"),
    }
    running = await _start("withdraw_svc", env)
    yield running
    await running.stop(1.0)


async def test_a_caller_with_a_certificate_is_known_by_its_certificate(
    tls_withdraw: RunningServer, pki: Path
) -> None:
    alice = TlsSettings(str(pki / "ca.pem"), str(pki / "alice.pem"), str(pki / "alice.key"))
    # The caller claims another name in metadata; the certificate's name must win.
    channel = dial(tls_withdraw.address, alice, caller="someone-else")
    admin = withdraw_pb2_grpc.WithdrawAdminServiceStub(channel)
    gate = (await admin.GetGate(withdraw_pb2.GetGateRequest(uid=1), timeout=10)).config
    await admin.SetGate(withdraw_pb2.SetGateRequest(config=gate, reason="tls test",
                                                    update_mask=FieldMask(paths=["*"])), timeout=10)
    audit = await admin.ListGateAudit(withdraw_pb2.ListGateAuditRequest(page_size=1), timeout=10)
    await channel.close()
    assert audit.entries[0].actor == "ops-alice"
    assert audit.entries[0].reason == "tls test"


async def test_plaintext_and_certificate_less_callers_are_refused(
    tls_withdraw: RunningServer, pki: Path
) -> None:
    request = withdraw_pb2.GetGateRequest(uid=1)
    plain = harness.channel(tls_withdraw.address)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await withdraw_pb2_grpc.WithdrawAdminServiceStub(plain).GetGate(request, timeout=5)
    await plain.close()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    anonymous = grpc.aio.secure_channel(
        tls_withdraw.address, grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes()))
    with pytest.raises(grpc.aio.AioRpcError) as no_cert:
        await withdraw_pb2_grpc.WithdrawAdminServiceStub(anonymous).GetGate(request, timeout=5)
    await anonymous.close()
    assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
