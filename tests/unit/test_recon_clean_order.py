"""The ledger's own rules for one order id (ledger_findings, which the ledger oracle of the
tests uses) are a part of the one definition of a clean order (check_order): whatever an
order's final state and payouts, entries that break them leave the order not clean."""

from __future__ import annotations

import itertools

from recon_svc.domain import FAILED, SUCCEEDED, EntryView, check_order, ledger_findings
from tests.recon_cases import AMT, debit, failed_payout, order, paid, processing, refund, void

ENTRIES = [debit(), debit(AMT + 100), refund(), refund(AMT + 100), void()]
PAYOUTS = [[], [paid()], [paid(AMT + 100)], [failed_payout()], [processing()], [paid(times=2)]]


def every_entry_list(longest: int) -> list[list[EntryView]]:
    return [list(c) for n in range(longest + 1)
            for c in itertools.combinations_with_replacement(ENTRIES, n)]


def test_entries_breaking_the_ledger_rules_make_any_final_order_unclean() -> None:
    broken = 0
    for entries in every_entry_list(3):
        if not ledger_findings(entries):
            continue
        broken += 1
        for state, amount, payouts in itertools.product((SUCCEEDED, FAILED), (AMT, AMT + 100), PAYOUTS):
            assert check_order(order(state, amount), entries, payouts), (state, amount, entries, payouts)
    assert broken > 20  # not vacuous: most small lists break a rule


def test_the_ledger_side_of_every_clean_shape_passes_the_ledger_rules() -> None:
    for entries in ([], [void()], [debit()], [debit(), refund()]):
        assert ledger_findings(entries) == []


def test_each_ledger_rule_names_its_class() -> None:
    assert [f.reason.value for f in ledger_findings([debit(), debit()])] == ["double_debit"]
    assert [f.reason.value for f in ledger_findings([refund()])] == ["double_refund"]
    assert [f.reason.value for f in ledger_findings([debit(), refund(), refund()])] == ["double_refund"]
    [mismatch] = ledger_findings([debit(), refund(AMT - 1)])
    assert mismatch.reason.value == "amount_mismatch" and str(AMT - 1) in mismatch.detail
