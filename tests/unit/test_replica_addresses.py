"""Addresses of replicas: one address dials exactly as before; several become one
round-robin target with health checking and an UNAVAILABLE-only retry policy; meshctl
places replica k at port + 2000*k without touching replica 0's ports."""

from __future__ import annotations

import json

import pytest

from meshkit.settings import addr_of, addrs_of, admin_addr_of
from meshkit.transport import target_of
from tools import meshctl as mesh


def test_one_address_dials_as_before() -> None:
    assert target_of("127.0.0.1:50051") == ("127.0.0.1:50051", [])
    assert target_of("localhost:50051") == ("localhost:50051", [])


def test_several_addresses_are_one_round_robin_target() -> None:
    target, options = target_of("127.0.0.1:1, localhost:2,127.0.0.1:1")
    assert target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    opts = dict(options)
    config = json.loads(opts["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    (method,) = config["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert opts["grpc.enable_retries"] == 1
    # The certificates name localhost and 127.0.0.1: the first replica's host is verified.
    assert opts["grpc.ssl_target_name_override"] == "127.0.0.1"
    assert opts["grpc.default_authority"] == "127.0.0.1:1"


def test_peer_list_is_addr_then_addrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYOUT_SVC_ADDR", raising=False)
    monkeypatch.delenv("PAYOUT_SVC_ADDRS", raising=False)
    monkeypatch.delenv("PAYOUT_SVC_ADMIN_ADDR", raising=False)
    assert addr_of("payout_svc") == "127.0.0.1:50053"
    assert admin_addr_of("payout_svc") == "127.0.0.1:50153"
    monkeypatch.setenv("PAYOUT_SVC_ADDRS", "127.0.0.1:50053, 127.0.0.1:52053,")
    assert addrs_of("payout_svc") == ["127.0.0.1:50053", "127.0.0.1:52053"]
    assert admin_addr_of("payout_svc") == "127.0.0.1:50153,127.0.0.1:52153"


def test_meshctl_one_replica_keeps_todays_environment() -> None:
    env = mesh.service_env({}, replicas=1)
    assert not [k for k in env if k.endswith("_ADDRS")]
    assert mesh.addr_of("withdraw_svc", env) == "127.0.0.1:50052"
    assert mesh.replica_env("withdraw_svc", env) == env


def test_meshctl_replica_ports_do_not_collide() -> None:
    env = mesh.service_env({}, replicas=3)
    taken: list[int] = []
    for service in mesh.SERVICES:
        assert env[f"{service.upper()}_ADDRS"].count(",") == 2
        for k in range(3):
            instance = mesh.instance_name(service, k)
            own = mesh.replica_env(instance, env)
            port = mesh.port_of(instance, env)
            admin = int(own.get(f"{service.upper()}_ADMIN_PORT") or port + 100)
            # gRPC, admin and metrics (gRPC port + 1000, meshkit.metrics) listeners.
            taken += [port, admin, port + 1000]
    assert len(taken) == len(set(taken))
    assert mesh.port_of("account_svc", env) == 50051
    assert mesh.port_of("account_svc-2", env) == 54051
    assert mesh.base_of("withdraw_svc-1") == "withdraw_svc"
    assert mesh.replica_of("withdraw_svc") == 0


def test_meshctl_refuses_a_bad_replica_count(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_ENV", "dev")  # main() sets it for `up`; restored after the test
    assert mesh.main(["up", "--replicas", "two"]) == 2
    assert "--replicas N" in capsys.readouterr().err
    assert mesh.main(["up", "--replicas", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err
