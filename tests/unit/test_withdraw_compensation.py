"""The compensation job against in-memory fakes of its own ports (tests/unit/withdraw_fakes.py):
every old open order is pushed on only by a definitive fact, a failure always settles the
refund it owes, and nothing moves while another runner, a worker's lock or an unknown
gateway answer says to wait."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from tests.unit.withdraw_fakes import (
    EPOCH,
    FakeGateway,
    FakeJobLock,
    FakeLedger,
    FakeLocks,
    FakeOrders,
    FakeOutbox,
    FakeRefunds,
    withdraw_settings,
)
from withdraw_svc.compensation import Compensation, CompensationAction
from withdraw_svc.domain import Action, FailureReason, GatewayView, Order, OrderState
from withdraw_svc.peers import GatewayPayout, PeerError

UID = 9


@dataclass
class World:
    job: Compensation
    orders: FakeOrders
    ledger: FakeLedger
    gateway: FakeGateway
    locks: FakeLocks
    refunds: FakeRefunds
    outbox: FakeOutbox
    runner: FakeJobLock

    def order(self, order_id: str, state: OrderState, amount_fen: int = 500, debited: bool = True) -> Order:
        failure = FailureReason.PAYOUT_FAILED.value if state is OrderState.FAILED else ""
        order = self.orders.put(Order(order_id, UID, f"r-{order_id}", amount_fen, "bank", "m-1", state,
                                      failure, EPOCH, EPOCH))
        if debited:
            self.ledger.debits[order_id] = amount_fen
        if state is not OrderState.PENDING_DEDUCT:
            self.orders.payout_jobs[order_id] = {"amount_fen": amount_fen}
            self.orders.published.add(order_id)
        return order

    async def run(self, dry_run: bool = False) -> dict[str, CompensationAction]:
        ran, actions = await self.job.run(dry_run=dry_run, min_age_s=0)
        assert ran
        return {a.order_id: a for a in actions}

    def state(self, order_id: str) -> OrderState:
        return self.orders.orders[order_id].state


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    orders, ledger = FakeOrders(), FakeLedger({UID: 0})
    gateway, locks, outbox, runner = FakeGateway(), FakeLocks(), FakeOutbox(), FakeJobLock()
    refunds = FakeRefunds(orders, ledger)
    settings = withdraw_settings(monkeypatch)
    job = Compensation(settings, orders, locks, ledger, gateway, refunds, outbox, runner)
    return World(job, orders, ledger, gateway, locks, refunds, outbox, runner)


async def test_an_unconfirmed_deduct_fails_and_its_debit_is_refunded(world: World) -> None:
    world.order("o-1", OrderState.PENDING_DEDUCT, debited=True)
    action = (await world.run())["o-1"]
    assert action.action is Action.FAIL_AND_REFUND and "REFUNDED" in action.detail
    assert world.state("o-1") is OrderState.FAILED
    assert world.orders.orders["o-1"].failure_reason == FailureReason.DEDUCT_UNCONFIRMED
    assert world.ledger.balances[UID] == 500 and world.refunds.processed == ["o-1"]


async def test_an_unconfirmed_deduct_without_a_debit_fails_and_voids_the_order_id(world: World) -> None:
    world.order("o-1", OrderState.PENDING_DEDUCT, debited=False)
    action = (await world.run())["o-1"]
    assert action.action is Action.FAIL and "VOIDED" in action.detail
    assert world.state("o-1") is OrderState.FAILED and world.ledger.balances[UID] == 0


async def test_a_paying_order_the_gateway_paid_succeeds_and_is_not_refunded(world: World) -> None:
    world.order("o-1", OrderState.PAYING)
    world.gateway.views["o-1"] = GatewayPayout(GatewayView.SUCCEEDED)
    action = (await world.run())["o-1"]
    assert action.action is Action.ADOPT_SUCCEEDED and world.state("o-1") is OrderState.SUCCEEDED
    assert world.orders.refunds == {} and world.ledger.debits == {"o-1": 500}
    assert world.locks.released == ["o-1"]


async def test_a_paying_order_the_gateway_failed_fails_and_is_refunded(world: World) -> None:
    world.order("o-1", OrderState.PAYING)
    world.gateway.views["o-1"] = GatewayPayout(GatewayView.FAILED, "closed account")
    action = (await world.run())["o-1"]
    assert action.action is Action.ADOPT_FAILED and "REFUNDED" in action.detail
    assert world.state("o-1") is OrderState.FAILED and world.ledger.balances[UID] == 500


@pytest.mark.parametrize("answer", [GatewayPayout(GatewayView.PROCESSING),
                                    PeerError("gateway", grpc.StatusCode.UNAVAILABLE, "away")])
async def test_a_paying_order_without_a_final_answer_is_left_paying(
    world: World, answer: GatewayPayout | PeerError
) -> None:
    world.order("o-1", OrderState.PAYING)
    world.gateway.views["o-1"] = answer
    action = (await world.run())["o-1"]
    assert action.action is Action.WAIT and world.state("o-1") is OrderState.PAYING
    assert world.orders.refunds == {} and world.orders.requeued == []
    assert world.locks.released == ["o-1"]


async def test_a_paying_order_the_gateway_never_saw_goes_back_to_payout_svc(world: World) -> None:
    world.order("o-1", OrderState.PAYING)  # the fake gateway has no record of it
    action = (await world.run())["o-1"]
    assert action.action is Action.REQUEUE_UNPAID and world.state("o-1") is OrderState.PAYING
    assert world.orders.requeued == ["o-1"] and world.outbox.nudged == 1


async def test_an_order_a_payout_worker_holds_is_left_alone(world: World) -> None:
    world.order("o-1", OrderState.PAYING)
    world.gateway.views["o-1"] = GatewayPayout(GatewayView.SUCCEEDED)
    world.locks.held["o-1"] = "payout-worker"
    action = (await world.run())["o-1"]
    assert action.action is Action.WAIT and world.state("o-1") is OrderState.PAYING
    assert world.locks.held == {"o-1": "payout-worker"}


async def test_a_failed_order_whose_refund_is_owed_gets_it(world: World) -> None:
    world.order("o-1", OrderState.FAILED)
    action = (await world.run())["o-1"]
    assert action.action is Action.REFUND and "REFUNDED" in action.detail
    assert world.ledger.balances[UID] == 500


async def test_a_dry_run_moves_nothing(world: World) -> None:
    world.order("o-1", OrderState.PENDING_DEDUCT)
    world.order("o-2", OrderState.PAYING)
    world.gateway.views["o-2"] = GatewayPayout(GatewayView.SUCCEEDED)
    planned = await world.run(dry_run=True)
    assert planned["o-1"].action is Action.FAIL_AND_REFUND and planned["o-2"].action is Action.ADOPT_SUCCEEDED
    assert world.state("o-1") is OrderState.PENDING_DEDUCT and world.state("o-2") is OrderState.PAYING
    assert world.refunds.processed == [] and world.ledger.balances[UID] == 0


async def test_nothing_runs_while_another_replica_holds_the_job(world: World) -> None:
    world.order("o-1", OrderState.PENDING_DEDUCT)
    world.runner.free = False
    assert await world.job.run(dry_run=False, min_age_s=0) == (False, [])
    assert world.state("o-1") is OrderState.PENDING_DEDUCT
