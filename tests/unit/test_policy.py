"""The caller policy covers every RPC of every service, names only identities and roles
that exist, and the identity rules (SAN URI, CN fallback, anonymous) hold."""

from __future__ import annotations

import importlib
import pkgutil
import stat
from pathlib import Path

import pytest
from cryptography import x509

import mesh
from meshkit.identity import ANONYMOUS, identity_of_auth
from meshkit.pki import IDENTITIES, CertDir
from meshkit.policy import ADMIN_SERVICES, POLICY, ROLES, allowed, role_of
from tools import certs as certs_tool


def _every_rpc() -> dict[str, str]:
    """"/pkg.Service/Method" -> service, for every service the protos define."""
    methods: dict[str, str] = {}
    for info in pkgutil.walk_packages(mesh.__path__, "mesh."):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = service.full_name
    return methods


def test_every_rpc_of_every_service_is_in_the_policy_table() -> None:
    rpcs = _every_rpc()
    assert len(rpcs) > 40  # the walk found the services
    assert sorted(set(rpcs) - set(POLICY)) == []


def test_the_policy_table_lists_no_rpc_that_does_not_exist() -> None:
    assert sorted(set(POLICY) - set(_every_rpc())) == []


def test_admin_services_exist() -> None:
    assert ADMIN_SERVICES <= set(_every_rpc().values())


def test_every_principal_is_a_known_identity_or_role() -> None:
    known = {*IDENTITIES, *(f"role:{r}" for r in ROLES)}
    unknown = {p for principals in POLICY.values() for p in principals} - known
    assert unknown == set()


def test_money_moves_only_on_the_word_of_the_service_that_owns_the_step() -> None:
    assert POLICY["/mesh.account.v1.AccountService/Deduct"] == ("withdraw_svc",)
    assert POLICY["/mesh.account.v1.AccountService/Refund"] == ("withdraw_svc",)
    assert POLICY["/mesh.gateway.v1.GatewayService/Payout"] == ("payout_svc",)
    assert POLICY["/mesh.withdraw.v1.PayoutCoordinationService/SettlePayout"] == ("payout_svc",)
    assert POLICY["/mesh.feed.v1.ChangeFeedService/ReadChanges"] == ("recon_svc",)


@pytest.mark.parametrize(("identity", "method", "expected"), [
    ("withdraw_svc", "/mesh.account.v1.AccountService/Deduct", True),
    ("app-edge", "/mesh.account.v1.AccountService/Deduct", False),
    ("operator-alice", "/mesh.withdraw.v1.WithdrawAdminService/SetGate", True),
    ("viewer-dave", "/mesh.withdraw.v1.WithdrawAdminService/SetGate", False),
    ("viewer-dave", "/mesh.withdraw.v1.WithdrawAdminService/GetGate", True),
    # A role is a prefix with a dash: "operator" alone, or "operators-x", is no operator.
    ("operator", "/mesh.withdraw.v1.WithdrawAdminService/GetGate", False),
    ("operators-x", "/mesh.withdraw.v1.WithdrawAdminService/GetGate", False),
    ("anonymous", "/grpc.health.v1.Health/Check", True),
    ("app-edge", "/mesh.nope.v1.Nope/Nothing", False),
])
def test_allowed(identity: str, method: str, expected: bool) -> None:
    assert allowed(identity, method) is expected


def test_roles_are_name_prefixes() -> None:
    names = ("operator-alice", "approver-carol", "viewer-dave", "app-edge", "withdraw_svc")
    assert [role_of(n) for n in names] == ["operator", "approver", "viewer", None, None]


def test_identity_is_the_san_uri_then_the_cn_then_anonymous() -> None:
    tls = {"transport_security_type": [b"ssl"]}
    assert identity_of_auth({**tls, "peer_uri": [b"spiffe://mesh/withdraw_svc"],
                             "x509_common_name": [b"app-edge"]}) == "withdraw_svc"
    assert identity_of_auth({**tls, "x509_common_name": [b"operator-cn"]}) == "operator-cn"
    sans = [b"spiffe://mesh/app-edge", b"localhost"]
    assert identity_of_auth({**tls, "x509_subject_alternative_name": sans,
                             "x509_common_name": [b"operator-cn"]}) == "app-edge"
    assert identity_of_auth({**tls, "x509_common_name": [b""]}) == ANONYMOUS
    # A SAN URI of another scheme is not ours, and does not fall back to the CN.
    assert identity_of_auth({**tls, "peer_uri": [b"spiffe://elsewhere/withdraw_svc"],
                             "x509_common_name": [b"withdraw_svc"]}) == ANONYMOUS
    assert identity_of_auth({"transport_security_type": [b"insecure"]}) is None
    assert identity_of_auth(None) is None


def test_make_certs_writes_the_layout_with_private_keys_0600(tmp_path: Path) -> None:
    certs = CertDir(tmp_path / "certs")
    assert certs_tool.ensure(certs) == list(IDENTITIES)
    assert certs.names() == sorted(IDENTITIES)
    for name in ("ca", *IDENTITIES):
        assert stat.S_IMODE((certs.path / f"{name}.key").stat().st_mode) == 0o600, name
    cert = x509.load_pem_x509_certificate(certs.cert("withdraw_svc").read_bytes())
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["spiffe://mesh/withdraw_svc"]
    # Run again: nothing missing, nothing reissued.
    before = certs.cert("app-edge").read_bytes()
    assert certs_tool.ensure(certs) == []
    assert certs.cert("app-edge").read_bytes() == before
