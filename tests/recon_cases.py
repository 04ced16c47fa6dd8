"""Orders, their ledger entries and gateway payouts, each either clean or with exactly one
fault: shared by the unit tests of recon's rules and the test that holds the daily batch's
SQL to them."""

from __future__ import annotations

from recon_svc.domain import EntryView, OrderView, PayoutView

AMT = 500

Case = tuple[OrderView | None, list[EntryView], list[PayoutView]]


def order(state: str, amount: int = AMT, conflict: str = "") -> OrderView:
    return OrderView("o-1", 7, amount, state, conflict)


def debit(amount: int = AMT) -> EntryView:
    return EntryView("DEBIT", amount)


def refund(amount: int = AMT) -> EntryView:
    return EntryView("REFUND", amount)


def void() -> EntryView:
    return EntryView("VOID", 0)


def paid(amount: int = AMT, times: int = 1, ref: str = "") -> PayoutView:
    return PayoutView("SUCCEEDED", amount, times, amount * times, ref)


def failed_payout(amount: int = AMT) -> PayoutView:
    return PayoutView("FAILED", amount)


def processing(amount: int = AMT) -> PayoutView:
    return PayoutView("PROCESSING", amount)


# Nothing wrong with these.
CLEAN: list[Case] = [
    (order("SUCCEEDED"), [debit()], [paid()]),
    (order("FAILED"), [], []),
    (order("FAILED"), [void()], []),
    (order("FAILED"), [void()], [failed_payout()]),
    (order("FAILED"), [debit(), refund()], []),
    (order("FAILED"), [debit(), refund()], [failed_payout()]),
    (order("PAYING"), [debit()], [processing()]),
    (order("PENDING_DEDUCT"), [], []),
    (order("PENDING_PAYOUT"), [debit(), debit()], []),  # judged once final, not before
    (None, [void()], []),
    (None, [], []),
]

# Each of these has exactly one fault, of the class named.
ONE_FAULT: list[tuple[OrderView | None, list[EntryView], list[PayoutView], str]] = [
    (order("SUCCEEDED"), [], [paid()], "missing_debit"),
    (order("SUCCEEDED"), [debit(), debit()], [paid()], "double_debit"),
    (order("FAILED"), [debit(), debit(), refund()], [], "double_debit"),
    (None, [debit()], [], "debit_without_order"),
    (None, [debit()], [paid()], "debit_without_order"),
    (order("FAILED"), [debit()], [], "missing_refund"),
    (order("FAILED"), [debit(), refund(), refund()], [], "double_refund"),
    (order("FAILED"), [refund()], [], "double_refund"),
    (order("SUCCEEDED"), [debit(), refund()], [paid()], "refund_on_succeeded"),
    (None, [], [paid()], "payout_without_debit"),
    (None, [], [processing()], "payout_without_debit"),
    (order("FAILED"), [void()], [paid()], "payout_without_debit"),
    (order("SUCCEEDED"), [debit()], [paid(times=2)], "double_payout"),
    (order("SUCCEEDED"), [debit()], [paid(ref="a"), paid(ref="b")], "double_payout"),
    (order("SUCCEEDED"), [debit(AMT + 1)], [paid()], "amount_mismatch"),
    (order("SUCCEEDED"), [debit()], [paid(AMT - 1)], "amount_mismatch"),
    (order("FAILED"), [debit(), refund(AMT - 1)], [], "amount_mismatch"),
    (order("FAILED"), [debit(AMT + 1), refund(AMT + 1)], [], "amount_mismatch"),
    (order("SUCCEEDED"), [debit()], [], "state_mismatch"),
    (order("SUCCEEDED"), [debit()], [failed_payout()], "state_mismatch"),
    (order("SUCCEEDED"), [debit()], [processing()], "state_mismatch"),
    (order("FAILED"), [debit(), refund()], [paid()], "state_mismatch"),
    (order("FAILED"), [debit()], [paid()], "state_mismatch"),
    (order("FAILED"), [debit()], [processing()], "state_mismatch"),
    (order("SUCCEEDED", conflict="FAILED"), [debit()], [paid()], "state_mismatch"),
]
