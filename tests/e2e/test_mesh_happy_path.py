"""The thin happy path through five real processes: a bound method, a signed reward
credited, a confirmed withdrawal of 1 yuan deducted, queued, paid by payout_svc through
gateway_mock, and the order SUCCEEDED; plus graceful SIGTERM of a running service."""

from __future__ import annotations

import grpc
import pytest

from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from tests.e2e.conftest import GRACE_S, E2EMesh
from tests.harness import user_metadata
from tools import demo
from tools import meshctl as mesh

pytestmark = pytest.mark.e2e


def test_every_service_is_a_live_process_serving_health(e2e_mesh: E2EMesh) -> None:
    rows = mesh.status(e2e_mesh.env, e2e_mesh.layout)
    assert [(r.service, r.health) for r in rows] == [(s, mesh.SERVING) for s in mesh.SERVICES]
    assert {r.service: r.pid for r in rows} == e2e_mesh.pids


def test_withdrawal_of_one_yuan_ends_succeeded(happy_order: demo.Withdrawal) -> None:
    order = happy_order.order
    assert happy_order.confirmed.state == withdraw_pb2.ORDER_STATE_PENDING_PAYOUT
    assert order.state == withdraw_pb2.ORDER_STATE_SUCCEEDED, order
    assert order.amount_fen == 100
    assert order.uid == happy_order.uid
    assert order.method_id == happy_order.method.method_id
    path = [(h.from_state, h.to_state) for h in order.history]
    assert path[-3:] == [
        (withdraw_pb2.ORDER_STATE_PENDING_DEDUCT, withdraw_pb2.ORDER_STATE_PENDING_PAYOUT),
        (withdraw_pb2.ORDER_STATE_PENDING_PAYOUT, withdraw_pb2.ORDER_STATE_PAYING),
        (withdraw_pb2.ORDER_STATE_PAYING, withdraw_pb2.ORDER_STATE_SUCCEEDED),
    ], order.history


def test_reward_was_credited_and_one_debit_taken(happy_order: demo.Withdrawal) -> None:
    assert happy_order.page.balance_fen == 500
    entries = happy_order.entries
    assert [(e.kind, e.amount_fen, e.order_id) for e in entries] == [
        (account_pb2.ENTRY_KIND_DEBIT, 100, happy_order.order.order_id)
    ]
    assert entries[0].balance_after_fen == 400
    assert happy_order.balance_fen == 400


def test_gateway_paid_exactly_once(happy_order: demo.Withdrawal) -> None:
    payout = happy_order.payout
    assert payout is not None
    assert payout.state == gateway_pb2.PAYOUT_STATE_SUCCEEDED
    assert (payout.order_id, payout.uid, payout.amount_fen) == (
        happy_order.order.order_id, happy_order.uid, 100,
    )
    assert payout.method_id == happy_order.method.method_id


async def test_confirm_replay_returns_the_same_order(e2e_mesh: E2EMesh, happy_order: demo.Withdrawal) -> None:
    """A user who taps again with the same request id gets the first order back."""
    order = happy_order.order
    async with grpc.aio.insecure_channel(e2e_mesh.addr("withdraw_svc")) as channel:
        stub = withdraw_pb2_grpc.WithdrawServiceStub(channel)
        reply = await stub.ConfirmWithdraw(
            withdraw_pb2.ConfirmWithdrawRequest(
                uid=order.uid, request_id=order.request_id, amount_fen=order.amount_fen,
                method_id=order.method_id,
            ),
            timeout=5, metadata=user_metadata(order.uid),
        )
    assert reply.replayed
    assert reply.order.order_id == order.order_id


async def test_recon_finds_the_order_clean(e2e_mesh: E2EMesh, happy_order: demo.Withdrawal) -> None:
    """recon's self-check asks account_svc and the gateway about the order: one debit,
    one successful payout, same amount -> no discrepancy."""
    async with grpc.aio.insecure_channel(e2e_mesh.addr("recon_svc")) as channel:
        stub = recon_pb2_grpc.ReconServiceStub(channel)
        reply = await stub.CheckOrder(
            recon_pb2.CheckOrderRequest(order_id=happy_order.order.order_id), timeout=10
        )
    assert list(reply.discrepancies) == []


def test_sigterm_drains_exits_zero_and_restarts(e2e_mesh: E2EMesh) -> None:
    """payout_svc holds blocking stream reads: SIGTERM must still end it cleanly in time."""
    code = mesh.stop("payout_svc", e2e_mesh.layout, grace=GRACE_S + 2.0)
    assert code == 0, mesh.log_tail("payout_svc", e2e_mesh.layout)
    assert mesh.health(e2e_mesh.addr("payout_svc"), e2e_mesh.env) == mesh.UNREACHABLE
    pid = mesh.ensure("payout_svc", e2e_mesh.env, e2e_mesh.layout, timeout=30.0)
    assert pid != e2e_mesh.pids["payout_svc"]
    e2e_mesh.pids["payout_svc"] = pid
    assert mesh.health(e2e_mesh.addr("payout_svc"), e2e_mesh.env) == mesh.SERVING
