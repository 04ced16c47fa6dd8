"""Support for withdraw_svc integration tests (no tests here).

Each test module starts its own small mesh (gateway_mock, account_svc, withdraw_svc) with
schemas and a Redis key namespace of its own, so payout workers, gateway faults or the
compensation job of other tests in the same run never touch its orders (and vice versa).
`<SVC>_ADDR` in os.environ is restored after each start, so services other tests start
later never dial ours."""

from __future__ import annotations

import importlib
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import redis.asyncio as redis

from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.db import create_pool
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.server import RunningServer
from meshkit.telemetry import setup_tracing
from tests import harness
from tests.harness import new_uid, patched_env, user_metadata
from tests.integration.ledger_invariants import assert_ledger_invariants, fund, reward_token

__all__ = ["WdMesh", "assert_ledger_invariants", "fund", "reward_token", "start_mesh"]


async def _start(name: str, env: dict[str, str], port: int = 0,
                 admin_port: int | None = None) -> RunningServer:
    """Like tests.harness.start_service, without leaving `<NAME>_ADDR` behind."""
    module = importlib.import_module(f"{name}.server")
    with patched_env(env):
        app, settings = module.build()
    return await harness.start_built(app, settings, port=port, admin_port=admin_port)


@dataclass
class WdMesh:
    tag: str
    env: dict[str, str]
    gateway_srv: RunningServer
    account_srv: RunningServer | None
    withdraws: list[RunningServer]
    payout_srv: RunningServer | None
    pool: asyncpg.Pool
    redis: redis.Redis
    keys: Keys
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    # -- stubs -----------------------------------------------------------------------------

    def _channel(self, address: str, caller: str | None = None) -> grpc.aio.Channel:
        """As the policy wants for each method, or as `caller` (an identity of tools/certs.py)."""
        channel = harness.channel(address, caller)
        self.channels.append(channel)
        return channel

    @property
    def withdraw_addr(self) -> str:
        return self.withdraws[0].address

    def withdraw(self, index: int = 0,
                 caller: str | None = None) -> withdraw_pb2_grpc.WithdrawServiceStub:
        return withdraw_pb2_grpc.WithdrawServiceStub(self._channel(self.withdraws[index].address, caller))

    def coordination(self) -> withdraw_pb2_grpc.PayoutCoordinationServiceStub:
        return withdraw_pb2_grpc.PayoutCoordinationServiceStub(self._channel(self.withdraw_addr))

    def admin(self, index: int = 0, caller: str | None = None) -> withdraw_pb2_grpc.WithdrawAdminServiceStub:
        return withdraw_pb2_grpc.WithdrawAdminServiceStub(
            self._channel(self.withdraws[index].address, caller=caller)
        )

    def account(self, caller: str | None = None) -> account_pb2_grpc.AccountServiceStub:
        return account_pb2_grpc.AccountServiceStub(self._channel(self.env["ACCOUNT_SVC_ADDR"], caller))

    def gateway(self) -> gateway_pb2_grpc.GatewayServiceStub:
        return gateway_pb2_grpc.GatewayServiceStub(self._channel(self.gateway_srv.address))

    def gateway_admin(self) -> gateway_pb2_grpc.GatewayAdminServiceStub:
        return gateway_pb2_grpc.GatewayAdminServiceStub(self._channel(self.gateway_srv.address))

    def app(self, index: int = 0) -> Any:
        return self.withdraws[index].app

    # -- data ------------------------------------------------------------------------------

    async def user(self, balance_fen: int = 0, channel: str = "bank") -> tuple[int, str]:
        """A fresh uid with a bound method on `channel` and `balance_fen` credited."""
        uid = new_uid()
        method_id = f"m-{uuid.uuid4().hex[:12]}"
        await self.gateway().BindMethod(gateway_pb2.BindMethodRequest(
            uid=uid, channel=channel, account=f"6222{uid % 10**12:012d}", method_id=method_id,
        ), timeout=10)
        if balance_fen:
            await self.fund(uid, balance_fen)
        return uid, method_id

    async def fund(self, uid: int, amount_fen: int) -> int:
        return await fund(self.account(), uid, amount_fen)

    async def balance(self, uid: int) -> int:
        reply = await self.account().GetBalance(account_pb2.GetBalanceRequest(uid=uid), timeout=10,
                                                metadata=user_metadata(uid))
        return int(reply.balance_fen)

    async def entries(self, order_id: str) -> list[str]:
        reply = await self.account().GetOrderEntries(
            account_pb2.GetOrderEntriesRequest(order_id=order_id), timeout=10
        )
        return [account_pb2.EntryKind.Name(e.kind).removeprefix("ENTRY_KIND_") for e in reply.entries]

    async def confirm(
        self, uid: int, method_id: str, amount_fen: int, request_id: str = "",
        tokens: list[str] | None = None, index: int = 0,
    ) -> withdraw_pb2.ConfirmWithdrawResponse:
        return await self.withdraw(index).ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
            uid=uid, request_id=request_id or uuid.uuid4().hex, amount_fen=amount_fen,
            method_id=method_id, tokens=tokens or [],
        ), timeout=15, metadata=user_metadata(uid))

    async def order(self, uid: int, order_id: str, index: int = 0) -> withdraw_pb2.Order:
        """GetOrder as the order's owner `uid`, signed in."""
        reply = await self.withdraw(index).GetOrder(withdraw_pb2.GetOrderRequest(order_id=order_id),
                                                    timeout=10, metadata=user_metadata(uid))
        return reply.order

    async def order_rows(self, uid: int) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM orders WHERE uid = $1 ORDER BY created_at", uid)

    async def order_state(self, order_id: str) -> str:
        return str(await self.pool.fetchval("SELECT state FROM orders WHERE order_id = $1", order_id))

    async def ledger_ok(self, uids: list[int]) -> None:
        with patched_env({"ACCOUNT_SVC_DB_SCHEMA": self.env["ACCOUNT_SVC_DB_SCHEMA"]}):
            await assert_ledger_invariants(uids)

    # -- processes -------------------------------------------------------------------------

    async def start_withdraw(self, extra: dict[str, str] | None = None) -> RunningServer:
        running = await _start("withdraw_svc", {**self.env, **(extra or {})})
        self.withdraws.append(running)
        return running

    async def stop_account(self) -> int:
        assert self.account_srv is not None
        port = self.account_srv.port
        await self.account_srv.stop(0.5)
        self.account_srv = None
        return port

    async def restart_account(self, port: int) -> None:
        self.account_srv = await _start("account_svc", self.env, port=port)

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close()
        if self.payout_srv is not None:
            await self.payout_srv.stop(1.0)
        for running in self.withdraws:
            await running.stop(1.0)
        if self.account_srv is not None:
            await self.account_srv.stop(1.0)
        await self.gateway_srv.stop(1.0)
        await self.pool.close()
        await self.redis.aclose()


async def start_mesh(mesh_env: dict[str, str], *, withdraw: bool = True, payout: bool = False,
                     extra: dict[str, str] | None = None) -> WdMesh:
    # Spans must be recorded for trace context to reach the stream entries.
    setup_tracing("withdraw-tests")
    tag = uuid.uuid4().hex[:8]
    prefix = f"{mesh_env['MESH_KEY_PREFIX']}:wd{tag}"
    env = {
        **mesh_env,
        "MESH_KEY_PREFIX": prefix,
        "GATEWAY_MOCK_DB_SCHEMA": f"gateway_wd{tag}",
        "ACCOUNT_SVC_DB_SCHEMA": f"account_wd{tag}",
        "PAYOUT_SVC_DB_SCHEMA": f"payout_wd{tag}",
        "WITHDRAW_SVC_DB_SCHEMA": f"withdraw_wd{tag}",
        "WITHDRAW_COMPENSATION_ENABLED": "false",
        "WITHDRAW_RELAY_INTERVAL_MS": "200",
        # PostgreSQL's connections are shared with every other test run on this machine.
        "WITHDRAW_DB_POOL_SIZE": "4",
        "ACCOUNT_DB_POOL_SIZE": "4",
        # These meshes burst many confirms (and credits) for one uid to test concurrency;
        # the per-user limits are tested with their own values (test_user_limits.py).
        "WITHDRAW_USER_CONFIRMS_PER_MIN": "1000",
        "ACCOUNT_USER_CREDITS_PER_MIN": "1000",
        **(extra or {}),
    }
    gateway_srv = await _start("gateway_mock", env)
    env["GATEWAY_MOCK_ADDR"] = gateway_srv.address
    # account_svc asks withdraw_svc before every refund: it is told withdraw_svc's port first.
    withdraw_port = free_port()
    env["WITHDRAW_SVC_ADDR"] = f"127.0.0.1:{withdraw_port}"
    account_srv = await _start("account_svc", env)
    env["ACCOUNT_SVC_ADDR"] = account_srv.address
    # withdraw_svc reads payout_svc's channel stats (auto-release) and payout_svc calls
    # withdraw_svc: payout_svc's port is chosen first so each can be told the other's.
    payout_port, payout_admin_port = free_port(), free_port()
    env["PAYOUT_SVC_ADDR"] = f"127.0.0.1:{payout_port}"
    env["PAYOUT_SVC_ADMIN_ADDR"] = f"127.0.0.1:{payout_admin_port}"
    withdraws = [await _start("withdraw_svc", env, port=withdraw_port)] if withdraw else []
    payout_srv = None
    if withdraws:
        if payout:
            payout_srv = await _start("payout_svc", env, port=payout_port, admin_port=payout_admin_port)
    else:
        # Migrate the schema so tests can read it before any withdraw_svc process runs.
        from meshkit.db import migrate
        from withdraw_svc.server import MIGRATIONS

        setup = await create_pool(env["DATABASE_URL"], env["WITHDRAW_SVC_DB_SCHEMA"], min_size=1, max_size=1)
        await migrate(setup, env["WITHDRAW_SVC_DB_SCHEMA"], MIGRATIONS)
        await setup.close()
    pool = await create_pool(env["DATABASE_URL"], env["WITHDRAW_SVC_DB_SCHEMA"], min_size=1, max_size=2)
    assert pool is not None
    client = open_redis(env["REDIS_URL"], env=env)
    return WdMesh(tag, env, gateway_srv, account_srv, withdraws, payout_srv, pool, client, Keys(prefix))


def free_port() -> int:
    """A port nothing listens on now (without payout_svc, nothing will: its clients see
    UNAVAILABLE instead of dialling a mesh of someone else's on the default port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def code_of(err: BaseException) -> grpc.StatusCode:
    assert isinstance(err, grpc.aio.AioRpcError), err
    return err.code()

