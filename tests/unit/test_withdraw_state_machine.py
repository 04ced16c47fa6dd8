"""The one definition of the order lifecycle (meshkit/order_states.py) and what reads it:
withdraw_svc's OrderState and its compare-and-set guard, recon_svc's ranks."""

from __future__ import annotations

import pytest

from meshkit import order_states
from recon_svc.domain import ORDER_RANK, TERMINAL_RANK
from withdraw_svc.domain import (
    OPEN_STATES,
    TRANSITIONS,
    OrderState,
    TransitionRefused,
    checked_sources,
    owes_refund,
)


def test_the_enum_names_every_state_of_the_table_and_no_other() -> None:
    assert [s.value for s in OrderState] == list(order_states.STATES)
    assert {s.value for s in OPEN_STATES} == set(order_states.OPEN)
    assert {s for s in OrderState if s.terminal} == {OrderState.SUCCEEDED, OrderState.FAILED}


def test_every_transition_raises_the_rank_and_terminal_states_share_the_top_one() -> None:
    for source, targets in TRANSITIONS.items():
        for target in targets:
            assert order_states.RANK[target] > order_states.RANK[source], (source, target)
    assert order_states.RANK[OrderState.SUCCEEDED] == order_states.RANK[OrderState.FAILED] == TERMINAL_RANK


def test_recon_ranks_orders_by_the_same_table() -> None:
    assert dict(ORDER_RANK) == {"PENDING_DEDUCT": 0, "PENDING_PAYOUT": 1, "PAYING": 2,
                                "SUCCEEDED": 3, "FAILED": 3}
    assert TERMINAL_RANK == 3


def test_only_failed_owes_a_refund() -> None:
    assert [s for s in OrderState if owes_refund(s)] == [OrderState.FAILED]


def test_a_compare_and_set_is_checked_against_the_table_before_the_database_is_asked() -> None:
    assert checked_sources([OrderState.PENDING_PAYOUT, OrderState.PAYING], OrderState.FAILED) == [
        "PENDING_PAYOUT", "PAYING"]
    with pytest.raises(TransitionRefused, match="SUCCEEDED"):
        checked_sources([OrderState.PAYING, OrderState.SUCCEEDED], OrderState.FAILED)
    with pytest.raises(TransitionRefused):
        checked_sources([OrderState.PENDING_DEDUCT], OrderState.PAYING)
    with pytest.raises(TransitionRefused):
        checked_sources([], OrderState.PAYING)
