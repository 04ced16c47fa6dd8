"""ConfirmWithdrawal against in-memory fakes of its own ports (tests/unit/withdraw_fakes.py):
idempotent replay, the refusals and what each leaves behind, and that a deduct whose
outcome is unknown is neither failed nor refunded."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import pytest

from meshkit.errors import Conflict, FailedPrecondition, Unavailable
from tests.unit.withdraw_fakes import FakeGate, FakeLedger, FakeMethods, FakeOrders
from withdraw_svc.bound_methods import BoundMethods
from withdraw_svc.confirm import ConfirmWithdrawal
from withdraw_svc.domain import ConfirmInput, FailureReason, Limits, OrderState
from withdraw_svc.peers import Method, PeerError

UID = 7
LIMITS = Limits(min_fen=100, max_fen=1_000_000, channels=("bank",))


@dataclass
class World:
    orders: FakeOrders = field(default_factory=FakeOrders)
    ledger: FakeLedger = field(default_factory=lambda: FakeLedger({UID: 1_000}))
    methods: FakeMethods = field(default_factory=lambda: FakeMethods({UID: [Method("m-1", "bank", "Bank")]}))
    gate: FakeGate = field(default_factory=FakeGate)
    relay_wakes: int = 0
    refund_wakes: int = 0

    def confirm(self) -> ConfirmWithdrawal:
        def wake_relay() -> None:
            self.relay_wakes += 1

        def wake_refunds() -> None:
            self.refund_wakes += 1

        bound = BoundMethods(self.methods, self.methods, LIMITS, cache_s=60, page_deadline_s=1.0)
        return ConfirmWithdrawal(
            self.orders, self.ledger, bound, self.gate, LIMITS, 1.0, wake_relay, wake_refunds,
            order_writes_in_flight=1, deduct_batch=16, deduct_in_flight=1, deduct_linger_s=0.0,
        )


def request(amount_fen: int = 600, request_id: str = "r-1", method_id: str = "m-1") -> ConfirmInput:
    return ConfirmInput(uid=UID, request_id=request_id, amount_fen=amount_fen, method_id=method_id, tokens=())


async def test_a_confirm_deducts_once_and_queues_the_payout() -> None:
    w = World()
    order, replayed = await w.confirm().confirm(request())
    assert not replayed and order.state is OrderState.PENDING_PAYOUT
    assert w.ledger.balances[UID] == 400 and w.ledger.debits == {order.order_id: 600}
    assert w.orders.payout_jobs[order.order_id]["amount_fen"] == 600
    assert w.relay_wakes == 1 and w.refund_wakes == 0


async def test_a_repeated_request_id_is_answered_with_the_first_order_and_moves_no_money() -> None:
    w = World()
    confirm = w.confirm()
    first, _ = await confirm.confirm(request())
    again, replayed = await confirm.confirm(request())
    assert replayed and again.order_id == first.order_id and again.state is OrderState.PENDING_PAYOUT
    assert w.ledger.deducts == 1 and w.ledger.balances[UID] == 400
    assert len(w.orders.orders) == 1


async def test_a_request_id_reused_for_another_amount_is_a_conflict() -> None:
    w = World()
    confirm = w.confirm()
    await confirm.confirm(request(600))
    with pytest.raises(Conflict) as refused:
        await confirm.confirm(request(700))
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert w.ledger.deducts == 1


async def test_insufficient_balance_fails_the_order_with_its_reason_and_owes_a_refund() -> None:
    w = World()
    confirm = w.confirm()
    with pytest.raises(FailedPrecondition) as refused:
        await confirm.confirm(request(1_500))
    assert refused.value.reason == "INSUFFICIENT_BALANCE"
    (order,) = w.orders.orders.values()
    assert order.state is OrderState.FAILED
    assert order.failure_reason == FailureReason.INSUFFICIENT_BALANCE
    # The refund job voids the order id at the ledger, so a late debit can never land.
    assert order.order_id in w.orders.refunds and w.refund_wakes == 1
    assert w.ledger.balances[UID] == 1_000 and w.relay_wakes == 0
    # Its replay says the same thing, and asks the ledger nothing more.
    with pytest.raises(FailedPrecondition) as again:
        await confirm.confirm(request(1_500))
    assert again.value.reason == "INSUFFICIENT_BALANCE" and w.ledger.deducts == 1


@pytest.mark.parametrize("message", ["account frozen", "insufficient balance (the text is not read)"])
async def test_a_deduct_refused_for_another_reason_fails_as_deduct_refused(message: str) -> None:
    w = World()
    w.ledger.refusals = [PeerError("account", grpc.StatusCode.FAILED_PRECONDITION, message, reason="FROZEN")]
    with pytest.raises(FailedPrecondition) as refused:
        await w.confirm().confirm(request())
    assert refused.value.reason == "DEDUCT_REFUSED"
    (order,) = w.orders.orders.values()
    assert order.state is OrderState.FAILED and order.failure_reason == FailureReason.DEDUCT_REFUSED
    assert order.order_id in w.orders.refunds and w.ledger.balances[UID] == 1_000


async def test_an_unknown_deduct_outcome_is_neither_failed_nor_refunded_and_a_retry_finishes_it() -> None:
    w = World()
    confirm = w.confirm()
    w.ledger.refusals = [PeerError("account", grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")]
    with pytest.raises(Unavailable) as away:
        await confirm.confirm(request())
    assert away.value.reason == "DEDUCT_UNKNOWN"
    (order,) = w.orders.orders.values()
    assert order.state is OrderState.PENDING_DEDUCT
    assert w.orders.refunds == {} and w.refund_wakes == 0
    # The same request_id drives the deduct again (the ledger is idempotent per order id).
    again, replayed = await confirm.confirm(request())
    assert replayed and again.order_id == order.order_id and again.state is OrderState.PENDING_PAYOUT
    assert w.ledger.balances[UID] == 400 and w.ledger.deducts == 2


async def test_a_closed_gate_refuses_a_new_order_but_answers_a_repeat_with_its_order() -> None:
    w = World()
    confirm = w.confirm()
    first, _ = await confirm.confirm(request())
    w.gate.open = False
    again, replayed = await confirm.confirm(request())
    assert replayed and again.order_id == first.order_id
    with pytest.raises(FailedPrecondition) as refused:
        await confirm.confirm(request(request_id="r-2"))
    assert refused.value.reason == "GATE_CLOSED_WINDOW"
    assert len(w.orders.orders) == 1 and w.ledger.deducts == 1


async def test_a_method_not_bound_is_refused_before_any_order_exists() -> None:
    w = World()
    with pytest.raises(FailedPrecondition) as refused:
        await w.confirm().confirm(request(method_id="m-unknown"))
    assert refused.value.reason == "METHOD_NOT_BOUND"
    assert w.orders.inserts == 0 and w.ledger.deducts == 0
