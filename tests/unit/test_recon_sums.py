"""The running sums as pure values: how a verdict moves them, what they must satisfy."""

from __future__ import annotations

from recon_svc.domain import OrderView, PayoutView
from recon_svc.sums import (
    Moves,
    Settled,
    Sum,
    Sums,
    differences,
    settled_mismatch,
    settled_share,
    verdict_moves,
)


def moved(judged_before: bool, before: Settled | None, after: Settled | None,
          amount: int = 500) -> dict[str, tuple[int, int]]:
    moves = Moves()
    verdict_moves(moves, amount, judged_before, before, after)
    return {name: (c, f) for name, c, f in moves.rows()}


def test_a_first_ok_verdict_counts_the_order_as_judged_and_settled() -> None:
    assert moved(False, None, Settled(500, 500)) == {
        "judged": (1, 500), "settled": (1, 500), "settled_paid": (1, 500)}


def test_a_failed_order_judged_ok_is_settled_with_nothing_paid() -> None:
    assert moved(False, None, Settled(0, 0)) == {"judged": (1, 500), "settled": (1, 0)}


def test_the_same_verdict_again_moves_nothing() -> None:
    assert moved(True, Settled(500, 500), Settled(500, 500)) == {}
    moves = Moves()
    verdict_moves(moves, 500, True, None, None)
    assert not moves and moves.rows() == []


def test_a_finding_after_an_ok_verdict_takes_the_order_out_of_the_settled_sums() -> None:
    assert moved(True, Settled(500, 500), None) == {"settled": (-1, -500), "settled_paid": (-1, -500)}
    assert moved(False, None, None) == {"judged": (1, 500)}


def test_a_new_ok_verdict_replaces_the_share_of_the_previous_one() -> None:
    assert moved(True, Settled(500, 0), Settled(500, 500)) == {"settled_paid": (1, 500)}


def test_moves_add_up_per_name_and_come_sorted() -> None:
    moves = Moves()
    moves.add(Sum.PAID, 1, 300)
    moves.add(Sum.CREDIT, 2, 1000)
    moves.add(Sum.PAID, 1, 200)
    moves.add(Sum.VOID, 0, 0)
    assert moves.rows() == [("credit", 2, 1000), ("paid", 2, 500)]


def test_settled_share_counts_only_succeeded_orders_and_what_was_paid() -> None:
    paid = PayoutView("SUCCEEDED", 500, 1, 500)
    assert settled_share(OrderView("o", 1, 500, "SUCCEEDED"), [paid]) == Settled(500, 500)
    assert settled_share(OrderView("o", 1, 500, "FAILED"), [PayoutView("FAILED", 500)]) == Settled(0, 0)


def test_settled_mismatch_names_both_sides() -> None:
    ok = Sums.of([("settled", 3, 1500), ("settled_paid", 3, 1500)])
    assert settled_mismatch(ok) == ""
    assert settled_mismatch(Sums.of([])) == ""
    off = Sums.of([("settled", 3, 1500), ("settled_paid", 3, 1501)])
    assert settled_mismatch(off) == "over 3 judged orders: succeeded orders 1500 fen, gateway paid 1501 fen"


def test_differences_lists_every_sum_the_recount_does_not_confirm() -> None:
    running = Sums.of([("credit", 2, 1000), ("paid", 1, 500), ("void", 0, 0)])
    recount = Sums.of([("credit", 2, 1000), ("paid", 2, 1000), ("debit", 1, 300)])
    assert differences(running, recount) == [
        "debit: running 0 / 0 fen, recount 1 / 300 fen",
        "paid: running 1 / 500 fen, recount 2 / 1000 fen",
    ]
    assert differences(recount, recount) == []
