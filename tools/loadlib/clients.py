"""Stubs for every service of a running mesh, found the way the services find each other:
`<SVC>_ADDR` (else 127.0.0.1 on the default port; admin services at `<SVC>_ADMIN_ADDR`,
else port + 100), with mutual TLS from MESH_CERTS_DIR (meshkit.dialer) unless MESH_INSECURE=1."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge.client import UserSessions
from mesh.account.v1 import account_pb2_grpc
from mesh.feed.v1 import feed_pb2_grpc
from mesh.gateway.v1 import gateway_pb2_grpc
from mesh.payout.v1 import payout_pb2_grpc
from mesh.recon.v1 import recon_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2_grpc
from meshkit.dialer import Dialer
from meshkit.identity import CALLER_HEADER
from meshkit.settings import DEFAULT_PORTS, addrs_of

T = TypeVar("T")

# RESOURCE_EXHAUSTED: a replica's admission control shed the call; it asks to come back.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.RESOURCE_EXHAUSTED)


async def retry_unavailable(make_call: Callable[[], Awaitable[T]], attempts: int = 6,
                            delay_s: float = 0.2, max_delay_s: float | None = None) -> T:
    """A service that was just killed and restarted answers UNAVAILABLE for a moment: retry
    those (and deadlines) with doubling backoff; any other status is raised at once."""
    for attempt in range(attempts):
        try:
            return await make_call()
        except grpc.aio.AioRpcError as err:
            if err.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(delay_s)
            delay_s = delay_s * 2 if max_delay_s is None else min(delay_s * 2, max_delay_s)
    raise AssertionError("unreachable")


SERVICES = ("gateway_mock", "account_svc", "withdraw_svc", "payout_svc", "recon_svc")

_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # A killed and restarted service must be re-dialled quickly, not after the default backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


async def serving(address: str, timeout: float = 1.0) -> bool:
    """Whether the server at `address` answers health SERVING (benches waiting for
    processes they started)."""
    dialer = Dialer.from_env()
    try:
        async with dialer.channel(address, dialer.identity_for("/grpc.health.v1.Health/Check")) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


def open_channel(address: str, env: Mapping[str, str] | None = None) -> grpc.aio.Channel:
    """A channel without client interceptors (with mutual TLS): the load generator shares
    two cores with the mesh, and a Python interceptor per call costs more than the call.
    Each method goes under the identity the policy wants (app-edge, an operator ...)."""
    source = os.environ if env is None else env
    return Dialer.from_env(source, bare_options=_OPTIONS).routed(address, env=source)


def address_of(service: str, env: Mapping[str, str]) -> str:
    """As the services resolve a peer: `<SVC>_ADDR`, else localhost on `<SVC>_PORT` or the
    default; then the other replicas of `<SVC>_ADDRS` (comma-separated: dialled round robin)."""
    upper = service.upper()
    first = env.get(f"{upper}_ADDR") or f"127.0.0.1:{env.get(f'{upper}_PORT') or DEFAULT_PORTS[service]}"
    return ",".join(addrs_of(service, {**env, f"{upper}_ADDR": first}))


@dataclass
class MeshClients:
    """One channel per service and the stubs the tools use."""

    caller: str
    addresses: dict[str, str]
    channels: dict[str, grpc.aio.Channel]
    withdraw: withdraw_pb2_grpc.WithdrawServiceStub
    withdraw_admin: withdraw_pb2_grpc.WithdrawAdminServiceStub
    withdraw_feed: feed_pb2_grpc.ChangeFeedServiceStub
    account: account_pb2_grpc.AccountServiceStub
    gateway: gateway_pb2_grpc.GatewayServiceStub
    gateway_admin: gateway_pb2_grpc.GatewayAdminServiceStub
    payout_admin: payout_pb2_grpc.PayoutAdminServiceStub
    recon: recon_pb2_grpc.ReconServiceStub
    # Change feeds by the name recon gives them.
    feeds: dict[str, feed_pb2_grpc.ChangeFeedServiceStub]
    # Where the session keys come from (SESSION_TOKEN_KEYS, or MESH_ENV=dev's dev key).
    environ: Mapping[str, str] = field(default_factory=dict)
    _sessions: UserSessions | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((CALLER_HEADER, self.caller),)

    def user_metadata(self, uid: int) -> tuple[tuple[str, str], ...]:
        """The caller header plus `uid`'s session token, for user-facing RPCs: minted once
        per simulated user and reused until near its expiry (tools standing in for the app)."""
        if self._sessions is None:
            self._sessions = UserSessions.from_env(self.environ)
        return self._sessions.metadata(uid, self.metadata)

    @classmethod
    def from_env(cls, caller: str, environ: Mapping[str, str] | None = None) -> MeshClients:
        env = os.environ if environ is None else environ
        addresses = {svc: address_of(svc, env) for svc in SERVICES}
        channels = {svc: open_channel(addr, env) for svc, addr in addresses.items()}
        return cls(
            caller=caller,
            environ=dict(env),
            addresses=addresses,
            channels=channels,
            withdraw=withdraw_pb2_grpc.WithdrawServiceStub(channels["withdraw_svc"]),
            withdraw_admin=withdraw_pb2_grpc.WithdrawAdminServiceStub(channels["withdraw_svc"]),
            withdraw_feed=feed_pb2_grpc.ChangeFeedServiceStub(channels["withdraw_svc"]),
            account=account_pb2_grpc.AccountServiceStub(channels["account_svc"]),
            gateway=gateway_pb2_grpc.GatewayServiceStub(channels["gateway_mock"]),
            gateway_admin=gateway_pb2_grpc.GatewayAdminServiceStub(channels["gateway_mock"]),
            payout_admin=payout_pb2_grpc.PayoutAdminServiceStub(channels["payout_svc"]),
            recon=recon_pb2_grpc.ReconServiceStub(channels["recon_svc"]),
            feeds={
                "account": feed_pb2_grpc.ChangeFeedServiceStub(channels["account_svc"]),
                "withdraw": feed_pb2_grpc.ChangeFeedServiceStub(channels["withdraw_svc"]),
                "gateway": feed_pb2_grpc.ChangeFeedServiceStub(channels["gateway_mock"]),
            },
        )

    async def serving(self, service: str, timeout: float = 1.0) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channels[service])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def wait_serving(self, services: tuple[str, ...] = SERVICES, timeout: float = 30.0) -> list[str]:
        """Wait until every service answers SERVING; returns those that still do not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        missing = list(services)
        while missing:
            states = await asyncio.gather(*(self.serving(svc) for svc in missing))
            missing = [svc for svc, ok in zip(missing, states, strict=True) if not ok]
            if not missing or loop.time() >= deadline:
                break
            await asyncio.sleep(0.2)
        return missing

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
