"""The withdraw order's lifecycle as plain data, the one table every service reads:
withdraw_svc's domain wraps it in its OrderState enum and checks every compare-and-set
against it; recon_svc ranks the states it projects by it. The database trigger
(withdraw_svc/migrations/001_withdraw.sql, orders_guard) is walked against this table
pair by pair in tests/integration/test_withdraw_state_machine.py, so neither can drift."""

from __future__ import annotations

from types import MappingProxyType

PENDING_DEDUCT = "PENDING_DEDUCT"
PENDING_PAYOUT = "PENDING_PAYOUT"
PAYING = "PAYING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"

# Every state, in the order an order goes through them; the first is where it is created.
STATES: tuple[str, ...] = (PENDING_DEDUCT, PENDING_PAYOUT, PAYING, SUCCEEDED, FAILED)
INITIAL = PENDING_DEDUCT

TRANSITIONS: MappingProxyType[str, frozenset[str]] = MappingProxyType({
    PENDING_DEDUCT: frozenset({PENDING_PAYOUT, FAILED}),
    PENDING_PAYOUT: frozenset({PAYING, FAILED}),
    PAYING: frozenset({SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
})

TERMINAL: frozenset[str] = frozenset(s for s in STATES if not TRANSITIONS[s])
OPEN: tuple[str, ...] = tuple(s for s in STATES if s not in TERMINAL)

# A failed order may have been debited (or may still be, by a deduct in flight): entering
# it owes a refund, which returns the debit or voids the order id at the ledger.
OWES_REFUND: frozenset[str] = frozenset({FAILED})


def _ranks() -> dict[str, int]:
    """Each state's longest distance from INITIAL: every transition raises the rank, so a
    projection that only lets the rank grow can never be dragged back by a late change."""
    rank = {INITIAL: 0}
    for state in STATES[1:]:
        rank[state] = 1 + max(rank[s] for s in STATES if state in TRANSITIONS[s])
    return rank


RANK: MappingProxyType[str, int] = MappingProxyType(_ranks())
# Every terminal state shares one rank: two different terminal states reported for one
# order are a conflict, not an order moving on.
TERMINAL_RANK: int = max(RANK.values())
assert {RANK[s] for s in TERMINAL} == {TERMINAL_RANK}, "terminal states must share the top rank"


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS[current]
