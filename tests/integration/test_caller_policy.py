"""Nobody in where they don't belong (issue 13): against the five real services, in-process
with this run's certificates, a client without a certificate, with one from another CA,
or with a valid certificate of the wrong identity is refused; every probe an outsider
tried is refused from a wrong identity, and nothing changes (ledger, orders, gateway
records, gate, rates, faults, discrepancies)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.dialer import Dialer
from meshkit.identity import CALLER_HEADER
from meshkit.pki import CertDir
from meshkit.server import RunningServer
from tests.integration.withdraw_support import WdMesh, _start, reward_token, start_mesh
from tests.waiting import eventually
from tools import certs as certs_tool

SERVICES = ("account_svc", "withdraw_svc", "payout_svc", "recon_svc", "gateway_mock")


@dataclass
class Mesh:
    wd: WdMesh
    recon: RunningServer
    dialer: Dialer
    victim: int
    method_id: str
    order_id: str

    def server(self, service: str) -> RunningServer:
        servers = {"account_svc": self.wd.account_srv, "withdraw_svc": self.wd.withdraws[0],
                   "payout_svc": self.wd.payout_srv, "recon_svc": self.recon,
                   "gateway_mock": self.wd.gateway_srv}
        running = servers[service]
        assert running is not None
        return running

    def listeners(self, service: str) -> list[str]:
        running = self.server(service)
        return [running.address, *([running.admin_address] if running.admin_address else [])]

    def as_(self, service: str, identity: str) -> grpc.aio.Channel:
        """A channel to `service` presenting `identity` only, admin services on their port."""
        channel = self.dialer.routed(self.server(service).address, self.server(service).admin_address,
                                     identity)
        self.wd.channels.append(channel)
        return channel


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[Mesh]:
    wd = await start_mesh(mesh_env, payout=True, extra={"PAYOUT_DEFAULT_RATES": "bank:unlimited"})
    recon = await _start("recon_svc", {**wd.env, "RECON_SVC_DB_SCHEMA": f"recon_pol{wd.tag}",
                                       "RECON_DB_POOL_SIZE": "2"})
    victim, method_id = await wd.user(balance_fen=5_000)
    order = (await wd.confirm(victim, method_id, 1_000)).order

    async def succeeded() -> bool | None:
        return await wd.order_state(order.order_id) == "SUCCEEDED" or None

    await eventually(succeeded, timeout=30)
    yield Mesh(wd, recon, Dialer.from_env(), victim, method_id, order.order_id)
    await recon.stop(1.0)
    await wd.stop()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertDir:
    """A CA nobody trusts, with a certificate that names a real service."""
    certs = CertDir(Path(tmp_path_factory.mktemp("other-ca")))
    certs_tool.make_ca(certs, common_name="someone-elses-ca")
    certs_tool.issue(certs, "withdraw_svc")
    return certs


async def _health(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    finally:
        await channel.close()
    return grpc.StatusCode.OK


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


# -- every service, every listener: the transport refuses -----------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_a_plaintext_client_is_refused(mesh: Mesh, service: str) -> None:
    for address in mesh.listeners(service):
        assert await _health(grpc.aio.insecure_channel(address)) == grpc.StatusCode.UNAVAILABLE, address


@pytest.mark.parametrize("service", SERVICES)
async def test_a_client_without_a_certificate_is_refused(mesh: Mesh, service: str) -> None:
    trusting = grpc.ssl_channel_credentials(mesh.dialer.certs.ca.read_bytes())  # type: ignore[union-attr]
    for address in mesh.listeners(service):
        channel = grpc.aio.secure_channel(address, trusting)
        assert await _health(channel) == grpc.StatusCode.UNAVAILABLE, address


@pytest.mark.parametrize("service", SERVICES)
async def test_a_certificate_from_another_ca_is_refused(mesh: Mesh, service: str, other_ca: CertDir) -> None:
    # The client trusts the mesh's CA (so only the server's judgement is tested) and
    # presents a certificate for withdraw_svc signed by a CA the mesh does not know.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=mesh.dialer.certs.ca.read_bytes(),  # type: ignore[union-attr]
        private_key=other_ca.key("withdraw_svc").read_bytes(),
        certificate_chain=other_ca.cert("withdraw_svc").read_bytes())
    for address in mesh.listeners(service):
        channel = grpc.aio.secure_channel(address, credentials)
        assert await _health(channel) == grpc.StatusCode.UNAVAILABLE, address


def _wrong_identity_calls(mesh: Mesh) -> dict[str, tuple[str, Callable[[grpc.aio.Channel], Awaitable[Any]]]]:
    """Per service: a valid certificate of an identity the policy does not allow, and a call."""
    return {
        "account_svc": ("app-edge", lambda ch: account_pb2_grpc.AccountServiceStub(ch).Deduct(
            account_pb2.DeductRequest(order_id=f"x-{uuid.uuid4().hex}", uid=mesh.victim, amount_fen=1),
            timeout=10)),
        "withdraw_svc": ("recon_svc", lambda ch: withdraw_pb2_grpc.WithdrawServiceStub(ch).ConfirmWithdraw(
            withdraw_pb2.ConfirmWithdrawRequest(uid=mesh.victim, request_id=uuid.uuid4().hex, amount_fen=1,
                                                method_id=mesh.method_id), timeout=10)),
        "payout_svc": ("app-edge", lambda ch: payout_pb2_grpc.PayoutAdminServiceStub(ch).SetChannelRate(
            payout_pb2.SetChannelRateRequest(channel="bank", rate_per_second=1.0), timeout=10)),
        "recon_svc": ("viewer-dave", lambda ch: recon_pb2_grpc.ReconServiceStub(ch).ResolveDiscrepancy(
            recon_pb2.ResolveDiscrepancyRequest(discrepancy_id=1, note="x"), timeout=10)),
        "gateway_mock": ("withdraw_svc", lambda ch: gateway_pb2_grpc.GatewayServiceStub(ch).Payout(
            gateway_pb2.PayoutRequest(order_id=f"x-{uuid.uuid4().hex}", uid=mesh.victim, channel="bank",
                                      method_id=mesh.method_id, amount_fen=1), timeout=10)),
    }


@pytest.mark.parametrize("service", SERVICES)
async def test_a_valid_certificate_of_the_wrong_identity_is_refused(mesh: Mesh, service: str) -> None:
    identity, call = _wrong_identity_calls(mesh)[service]
    code, details = await _code(call(mesh.as_(service, identity)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith(f"caller {identity} may not call /mesh.")


async def test_the_caller_header_is_ignored_under_tls(mesh: Mesh) -> None:
    """app-edge saying it is withdraw_svc is still app-edge."""
    account = account_pb2_grpc.AccountServiceStub(mesh.as_("account_svc", "app-edge"))
    code, details = await _code(account.Refund(account_pb2.RefundRequest(order_id=mesh.order_id),
                                               metadata=((CALLER_HEADER, "withdraw_svc"),), timeout=10))
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED,
                               "caller app-edge may not call /mesh.account.v1.AccountService/Refund")


@pytest.mark.parametrize(("service", "method", "request_bytes"), [
    ("withdraw_svc", "/mesh.withdraw.v1.WithdrawAdminService/GetGate", b""),
    ("payout_svc", "/mesh.payout.v1.PayoutAdminService/GetChannelStats", b""),
    ("gateway_mock", "/mesh.gateway.v1.GatewayAdminService/GetChannelFaults",
     gateway_pb2.GetChannelFaultsRequest(channel="bank").SerializeToString()),
])
async def test_admin_services_answer_on_the_admin_port_only(mesh: Mesh, service: str, method: str,
                                                            request_bytes: bytes) -> None:
    running = mesh.server(service)
    assert running.admin_address is not None and running.admin_address != running.address
    main = mesh.dialer.channel(running.address, "operator-alice")
    admin = mesh.dialer.channel(running.admin_address, "operator-alice")
    try:
        on_main = await _code(main.unary_unary(method)(request_bytes, timeout=10))
        on_admin = await _code(admin.unary_unary(method)(request_bytes, timeout=10))
    finally:
        await main.close()
        await admin.close()
    assert on_main[0] == grpc.StatusCode.UNIMPLEMENTED
    assert on_admin[0] == grpc.StatusCode.OK


# -- the probes of issue 13, from wrong identities: refused, nothing changed ----------------


async def _snapshot(mesh: Mesh) -> dict[str, Any]:
    env = mesh.wd.env
    conn = await asyncpg.connect(env["DATABASE_URL"])
    try:
        account, gateway = env["ACCOUNT_SVC_DB_SCHEMA"], env["GATEWAY_MOCK_DB_SCHEMA"]
        ledger = await conn.fetch(f'SELECT uid, balance FROM "{account}".accounts ORDER BY uid')
        entries = await conn.fetchval(f'SELECT count(*) FROM "{account}".entries')
        payouts = await conn.fetch(f'SELECT * FROM "{gateway}".payouts ORDER BY order_id')
        methods = await conn.fetch(f'SELECT * FROM "{gateway}".methods ORDER BY method_id')
    finally:
        await conn.close()
    orders = await mesh.wd.pool.fetch("SELECT order_id, uid, state, amount_fen FROM orders ORDER BY order_id")
    viewer = "viewer-dave"
    gate = await withdraw_pb2_grpc.WithdrawAdminServiceStub(mesh.as_("withdraw_svc", viewer)).GetGate(
        withdraw_pb2.GetGateRequest(), timeout=10)
    rates = await payout_pb2_grpc.PayoutAdminServiceStub(mesh.as_("payout_svc", viewer)).GetChannelStats(
        payout_pb2.GetChannelStatsRequest(), timeout=10)
    gateway_admin = gateway_pb2_grpc.GatewayAdminServiceStub(mesh.as_("gateway_mock", viewer))
    faults = await gateway_admin.GetChannelFaults(gateway_pb2.GetChannelFaultsRequest(channel="bank"),
                                                  timeout=10)
    discrepancies = await recon_pb2_grpc.ReconServiceStub(mesh.as_("recon_svc", viewer)).ListDiscrepancies(
        recon_pb2.ListDiscrepanciesRequest(), timeout=10)
    return {
        "ledger": [tuple(r) for r in ledger], "entries": entries,
        "payouts": [tuple(r) for r in payouts], "methods": [tuple(r) for r in methods],
        "orders": [tuple(r) for r in orders],
        "gate": gate.config.SerializeToString(deterministic=True),
        "rates": sorted((s.channel, s.rate_limit_per_second, s.unlimited, s.paused) for s in rates.channels),
        "faults": faults.SerializeToString(deterministic=True),
        "discrepancies": discrepancies.SerializeToString(deterministic=True),
    }


Probe = Callable[[Mesh, grpc.aio.Channel], Awaitable[Any]]


def _probes() -> list[tuple[str, str, tuple[str, ...], Probe]]:
    """(what, service, wrong identities, the call)."""
    thief = 424242
    return [
        ("deduct from any uid", "account_svc", ("app-edge", "payout_svc", "operator-alice"),
         lambda m, ch: account_pb2_grpc.AccountServiceStub(ch).Deduct(account_pb2.DeductRequest(
             order_id=f"probe-{uuid.uuid4().hex}", uid=m.victim, amount_fen=100), timeout=10)),
        ("deduct in a batch", "account_svc", ("app-edge", "recon_svc"),
         lambda m, ch: account_pb2_grpc.AccountServiceStub(ch).DeductBatch(account_pb2.DeductBatchRequest(
             deducts=[account_pb2.DeductRequest(order_id=f"probe-{uuid.uuid4().hex}", uid=m.victim,
                                                amount_fen=100)]), timeout=10)),
        ("refund a SUCCEEDED order", "account_svc", ("app-edge", "payout_svc", "approver-carol"),
         lambda m, ch: account_pb2_grpc.AccountServiceStub(ch).Refund(
             account_pb2.RefundRequest(order_id=m.order_id), timeout=10)),
        ("mint credits", "account_svc", ("app-edge", "operator-alice"),
         lambda m, ch: account_pb2_grpc.AccountServiceStub(ch).ForceCredit(account_pb2.ForceCreditRequest(
             uid=thief, tokens=[reward_token(thief, 10_000)]), timeout=10)),
        ("pay out at the gateway directly", "gateway_mock", ("app-edge", "withdraw_svc", "operator-alice"),
         lambda m, ch: gateway_pb2_grpc.GatewayServiceStub(ch).Payout(gateway_pb2.PayoutRequest(
             order_id=f"probe-{uuid.uuid4().hex}", uid=m.victim, channel="bank", method_id=m.method_id,
             amount_fen=100), timeout=10)),
        ("pay out a batch at the gateway", "gateway_mock", ("app-edge", "recon_svc"),
         lambda m, ch: gateway_pb2_grpc.GatewayServiceStub(ch).PayoutBatch(gateway_pb2.PayoutBatchRequest(
             payouts=[gateway_pb2.PayoutRequest(order_id=f"probe-{uuid.uuid4().hex}", uid=m.victim,
                                                channel="bank", method_id=m.method_id, amount_fen=100)]),
             timeout=10)),
        ("bind an account to someone else's uid", "gateway_mock", ("withdraw_svc", "viewer-dave"),
         lambda m, ch: gateway_pb2_grpc.GatewayServiceStub(ch).BindMethod(gateway_pb2.BindMethodRequest(
             uid=m.victim, channel="bank", account="6222000000424242"), timeout=10)),
        ("confirm a withdrawal for them", "withdraw_svc", ("payout_svc", "operator-alice", "viewer-dave"),
         lambda m, ch: withdraw_pb2_grpc.WithdrawServiceStub(ch).ConfirmWithdraw(
             withdraw_pb2.ConfirmWithdrawRequest(uid=m.victim, request_id=uuid.uuid4().hex, amount_fen=100,
                                                 method_id=m.method_id), timeout=10)),
        ("declare an order FAILED", "withdraw_svc", ("app-edge", "withdraw_svc", "operator-alice"),
         lambda m, ch: withdraw_pb2_grpc.PayoutCoordinationServiceStub(ch).SettlePayout(
             withdraw_pb2.SettlePayoutRequest(order_id=m.order_id, result=withdraw_pb2.PAYOUT_RESULT_FAILED,
                                              reason="probe"), timeout=10)),
        ("change the gate", "withdraw_svc", ("app-edge", "viewer-dave", "payout_svc"),
         lambda m, ch: withdraw_pb2_grpc.WithdrawAdminServiceStub(ch).SetGate(withdraw_pb2.SetGateRequest(
             config=withdraw_pb2.GateConfig(release_modulus=10, release_k=10), reason="probe",
             update_mask=FieldMask(paths=["release_modulus", "release_k"])), timeout=10)),
        ("change a channel rate", "payout_svc", ("app-edge", "viewer-dave", "withdraw_svc"),
         lambda m, ch: payout_pb2_grpc.PayoutAdminServiceStub(ch).SetChannelRate(
             payout_pb2.SetChannelRateRequest(channel="bank", rate_per_second=0.5), timeout=10)),
        ("change the gateway faults", "gateway_mock", ("app-edge", "viewer-dave", "payout_svc"),
         lambda m, ch: gateway_pb2_grpc.GatewayAdminServiceStub(ch).SetChannelFaults(
             gateway_pb2.SetChannelFaultsRequest(faults=gateway_pb2.ChannelFaults(
                 channel="bank", capacity_per_second=1)), timeout=10)),
        ("read anyone's order", "withdraw_svc", ("account_svc", "gateway_mock"),
         lambda m, ch: withdraw_pb2_grpc.WithdrawServiceStub(ch).GetOrder(
             withdraw_pb2.GetOrderRequest(order_id=m.order_id), timeout=10)),
        ("list anyone's orders", "withdraw_svc", ("account_svc", "payout_svc"),
         lambda m, ch: withdraw_pb2_grpc.WithdrawServiceStub(ch).ListOrders(
             withdraw_pb2.ListOrdersRequest(uid=m.victim), timeout=10)),
        ("read anyone's balance", "account_svc", ("gateway_mock", "payout_svc"),
         lambda m, ch: account_pb2_grpc.AccountServiceStub(ch).GetBalance(
             account_pb2.GetBalanceRequest(uid=m.victim), timeout=10)),
        ("read anyone's bill", "account_svc", ("withdraw_svc", "payout_svc"),
         lambda m, ch: account_pb2_grpc.AccountServiceStub(ch).ListEntries(
             account_pb2.ListEntriesRequest(uid=m.victim), timeout=10)),
        ("resolve recon's discrepancies", "recon_svc", ("app-edge", "viewer-dave", "withdraw_svc"),
         lambda m, ch: recon_pb2_grpc.ReconServiceStub(ch).ResolveDiscrepancy(
             recon_pb2.ResolveDiscrepancyRequest(
                 discrepancy_id=1, status=recon_pb2.DISCREPANCY_STATUS_RESOLVED, note="probe"), timeout=10)),
    ]


async def test_every_probe_of_issue_13_from_a_wrong_identity_is_refused_and_changes_nothing(
        mesh: Mesh) -> None:
    before = await _snapshot(mesh)
    outcomes = []
    for what, service, identities, probe in _probes():
        for identity in identities:
            code, details = await _code(probe(mesh, mesh.as_(service, identity)))
            outcomes.append((what, identity, code, details.split(" may not call ")[0]))
    assert [o for o in outcomes if o[2:] != (grpc.StatusCode.PERMISSION_DENIED, f"caller {o[1]}")] == []
    assert len(outcomes) >= 40
    assert await _snapshot(mesh) == before


async def test_the_read_probes_as_the_right_identity_get_past_the_policy(mesh: Mesh) -> None:
    """The refusals above are the policy's, not a broken call: the identity the policy lists
    gets past it (an answer or a domain refusal, never PERMISSION_DENIED). Only probes that
    change nothing are repeated; the allowed money paths have their own tests."""
    allowed = {"read anyone's order": "app-edge", "list anyone's orders": "app-edge",
               "read anyone's balance": "app-edge", "read anyone's bill": "app-edge",
               "resolve recon's discrepancies": "operator-alice"}
    codes = {}
    for what, service, _, probe in _probes():
        if what in allowed:
            codes[what] = (await _code(probe(mesh, mesh.as_(service, allowed[what]))))[0]
    assert set(codes) == set(allowed)
    assert grpc.StatusCode.PERMISSION_DENIED not in codes.values(), codes
