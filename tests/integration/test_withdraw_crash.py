"""withdraw_svc dies (as with kill -9) after an order turned FAILED and before its refund
call. The refund job was written with the FAILED transition, so after a restart the refund
happens, exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from tests import harness
from tests.harness import user_metadata
from tests.integration.withdraw_support import WdMesh, start_mesh
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, withdraw=False)  # withdraw_svc runs as a process here
    yield m
    await m.stop()


class WithdrawProcess:
    def __init__(self, mesh: WdMesh, port: int, extra: dict[str, str], log: Path) -> None:
        env = {**os.environ, **mesh.env, **extra, "WITHDRAW_SVC_PORT": str(port),
               "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
        self.log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "withdraw_svc"], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.address = f"127.0.0.1:{port}"
        self.channel = harness.channel(self.address)

    async def ready(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)

        async def serving() -> bool:
            assert self.proc.poll() is None, "withdraw_svc exited during start"
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, timeout=30, interval=0.2, what="withdraw_svc process to serve")

    async def exited(self, timeout: float) -> int:
        return int(await eventually(self.proc.poll, lambda code: code is not None, timeout=timeout,
                                    what="withdraw_svc to exit"))

    async def stop(self) -> None:
        await self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def test_refund_happens_once_after_a_crash_between_failed_and_refund(
    mesh: WdMesh, tmp_path: Path
) -> None:
    # The port start_mesh told account_svc (which asks withdraw_svc before a refund).
    port = int(mesh.env["WITHDRAW_SVC_ADDR"].rsplit(":", 1)[1])
    crashing = WithdrawProcess(mesh, port, {"WITHDRAW_TEST_CRASH_BEFORE_REFUND": "1"}, tmp_path / "a.log")
    try:
        await crashing.ready()
        uid, method = await mesh.user(balance_fen=2_000)
        stub = withdraw_pb2_grpc.WithdrawServiceStub(crashing.channel)
        order = (await stub.ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
            uid=uid, request_id="crash-1", amount_fen=1_500, method_id=method), timeout=10,
            metadata=user_metadata(uid))).order
        assert await mesh.balance(uid) == 500
        coordination = withdraw_pb2_grpc.PayoutCoordinationServiceStub(crashing.channel)
        await coordination.BeginPayout(withdraw_pb2.BeginPayoutRequest(order_id=order.order_id), timeout=10)
        try:
            await coordination.SettlePayout(withdraw_pb2.SettlePayoutRequest(
                order_id=order.order_id, result=withdraw_pb2.PAYOUT_RESULT_FAILED, reason="closed account"),
                timeout=10)
        except grpc.aio.AioRpcError as err:
            # The process may die before the reply leaves; the transition committed anyway.
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert await crashing.exited(timeout=10) == 137
    finally:
        await crashing.stop()
    log = (tmp_path / "a.log").read_text()
    assert "WITHDRAW_TEST_CRASH_BEFORE_REFUND" in log

    # Dead between FAILED and the refund: FAILED is durable, its refund job is open.
    assert await mesh.order_state(order.order_id) == "FAILED"
    job = await mesh.pool.fetchrow("SELECT done_at FROM outbox WHERE kind = 'REFUND' AND order_id = $1",
                                   order.order_id)
    assert job is not None and job["done_at"] is None
    assert await mesh.entries(order.order_id) == ["DEBIT"]
    assert await mesh.balance(uid) == 500

    restarted = WithdrawProcess(mesh, port, {}, tmp_path / "b.log")
    try:
        await restarted.ready()

        async def refunded() -> bool:
            row = await mesh.pool.fetchrow(
                "SELECT outcome FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order.order_id)
            return row is not None and row["outcome"] == "REFUNDED"

        await eventually(refunded, timeout=10, what="the restarted relay to refund")
        admin = withdraw_pb2_grpc.WithdrawAdminServiceStub(restarted.channel)
        reply = await admin.RunCompensation(withdraw_pb2.RunCompensationRequest(
            min_age_seconds=0, override_min_age=True), timeout=30)
        assert reply.ran and order.order_id not in {a.order_id for a in reply.actions}
        got = await withdraw_pb2_grpc.WithdrawServiceStub(restarted.channel).GetOrder(
            withdraw_pb2.GetOrderRequest(order_id=order.order_id), timeout=10, metadata=user_metadata(uid))
        assert got.order.refund_state == "REFUNDED"
    finally:
        await restarted.stop()
    assert await mesh.entries(order.order_id) == ["DEBIT", "REFUND"]
    assert await mesh.balance(uid) == 2_000
    await mesh.ledger_ok([uid])
