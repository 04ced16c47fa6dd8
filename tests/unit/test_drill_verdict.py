"""The drill's verdict over the services' answers: clean orders and accounted money pass;
each broken rule fails the drill under recon's name for it."""

from __future__ import annotations

from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2
from tools.drill_verdict import Answers, Run, verdict
from tools.loadlib.seeding import TestUser as SeededUser

AMT = 300
FUNDED = 1000


def order(order_id: str, uid: int, state: int) -> withdraw_pb2.Order:
    return withdraw_pb2.Order(order_id=order_id, uid=uid, amount_fen=AMT, state=state)


def entry(order_id: str, kind: int, entry_id: int) -> account_pb2.Entry:
    return account_pb2.Entry(entry_id=entry_id, order_id=order_id, kind=kind, amount_fen=AMT)


def paid(order_id: str, uid: int) -> gateway_pb2.Payout:
    return gateway_pb2.Payout(order_id=order_id, uid=uid, amount_fen=AMT,
                              state=gateway_pb2.PAYOUT_STATE_SUCCEEDED)


ORDERS = {"s": order("s", 1, withdraw_pb2.ORDER_STATE_SUCCEEDED),
          "f": order("f", 2, withdraw_pb2.ORDER_STATE_FAILED)}
RUN = Run([SeededUser(1, "bank", "m-1", FUNDED), SeededUser(2, "bank", "m-2", FUNDED)], {"s", "f"}, set())


def answers(*, entries: dict[str, list[account_pb2.Entry]] | None = None,
            listed: list[gateway_pb2.Payout] | None = None,
            balances: dict[int, int] | None = None) -> Answers:
    clean_entries = {"s": [entry("s", account_pb2.ENTRY_KIND_DEBIT, 1)],
                     "f": [entry("f", account_pb2.ENTRY_KIND_DEBIT, 2),
                           entry("f", account_pb2.ENTRY_KIND_REFUND, 3)]}
    payouts = [paid("s", 1)] if listed is None else listed
    return Answers(entries=clean_entries if entries is None else entries,
                   payouts={p.order_id: p for p in payouts},
                   balances={1: FUNDED - AMT, 2: FUNDED} if balances is None else balances,
                   listed=payouts, discrepancies=[], unattributed=[])


def test_clean_orders_with_every_fen_accounted_for_pass() -> None:
    result = verdict(ORDERS, answers(), RUN)
    assert result.passed, result.line
    assert result.line == ("DRILL PASS orders=2 succeeded=1 failed=1 lost_fen=0 double_payouts=0 "
                           "discrepancies=0")
    assert result.checks["gateway_succeeded_fen"] == result.checks["succeeded_fen"] == AMT


def test_a_second_payout_fails_as_recons_double_payout() -> None:
    result = verdict(ORDERS, answers(listed=[paid("s", 1), paid("s", 1)]), RUN)
    assert not result.passed and result.double_payouts == 1
    assert any(p.startswith("order not clean: double_payout: 1") for p in result.problems), result.problems


def test_a_failed_order_never_refunded_fails_as_recons_missing_refund() -> None:
    entries = {"s": [entry("s", account_pb2.ENTRY_KIND_DEBIT, 1)],
               "f": [entry("f", account_pb2.ENTRY_KIND_DEBIT, 2)]}
    result = verdict(ORDERS, answers(entries=entries, balances={1: FUNDED - AMT, 2: FUNDED - AMT}), RUN)
    assert not result.passed and result.lost_fen == AMT
    kinds = {p.split(":")[0] + ":" + p.split(":")[1] for p in result.problems}
    assert "order not clean: missing_refund" in kinds
    assert "conservation (funding != balance + paid out): 1 (e.g. uid 2" in " ".join(result.problems)


def test_an_order_left_in_flight_fails() -> None:
    orders = {**ORDERS, "p": order("p", 1, withdraw_pb2.ORDER_STATE_PAYING)}
    result = verdict(orders, answers(), RUN)
    assert not result.passed
    assert any(p.startswith("not terminal: 1 (e.g. p PAYING)") for p in result.problems), result.problems
