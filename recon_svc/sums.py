"""Running sums of reconciliation (table r_totals): what each one counts, the moves one
transaction makes to them, and the rule they must satisfy. Pure values, no I/O: the
repository writes the moves in the transaction that changes the rows they summarise."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from recon_svc.domain import SUCCEEDED, OrderView, PayoutView


class Sum(StrEnum):
    """The running sums; values are r_totals names (see migrations/003_running_sums.sql)."""

    CREDIT = "credit"
    DEBIT = "debit"
    REFUND = "refund"
    VOID = "void"
    BALANCE = "balance"
    PAID = "paid"
    ORDER = "order"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    JUDGED = "judged"
    SETTLED = "settled"
    SETTLED_PAID = "settled_paid"


@dataclass(frozen=True)
class Amount:
    count: int = 0
    fen: int = 0


class Moves:
    """What one transaction adds to the running sums. Only non-zero moves are written, so a
    transaction that changed no projection row (a replayed page) writes none."""

    def __init__(self) -> None:
        self._moves: dict[str, list[int]] = {}

    def add(self, name: str, count: int, fen: int) -> None:
        move = self._moves.setdefault(name, [0, 0])
        move[0] += count
        move[1] += fen

    def rows(self) -> list[tuple[str, int, int]]:
        # Sorted: concurrent writers then lock the r_totals rows in one order.
        return sorted((name, c, f) for name, (c, f) in self._moves.items() if c or f)

    def __bool__(self) -> bool:
        return bool(self.rows())


@dataclass(frozen=True)
class Sums:
    values: Mapping[str, Amount]

    @classmethod
    def of(cls, rows: Iterable[tuple[str, int, int]]) -> Sums:
        # A sum at zero is the same as one never moved: two Sums compare by their values.
        return cls({name: Amount(count, fen) for name, count, fen in rows if count or fen})

    def __getitem__(self, name: str) -> Amount:
        return self.values.get(name, Amount())


def differences(running: Sums, recount: Sums) -> list[str]:
    """Every running sum that is not what a full recount of the projections gives."""
    names = sorted(set(running.values) | set(recount.values))
    return [f"{n}: running {running[n].count} / {running[n].fen} fen, recount "
            f"{recount[n].count} / {recount[n].fen} fen"
            for n in names if running[n] != recount[n]]


def settled_mismatch(sums: Sums) -> str:
    """Empty when the orders judged ok add up (what succeeded is what the gateway paid for
    them), else what is off. Each ok verdict already says so for its own order, so a
    difference here means the per-order rules and the sums disagree."""
    settled, paid = sums[Sum.SETTLED], sums[Sum.SETTLED_PAID]
    if settled.fen == paid.fen:
        return ""
    return (f"over {settled.count} judged orders: succeeded orders {settled.fen} fen, "
            f"gateway paid {paid.fen} fen")


@dataclass(frozen=True)
class Settled:
    """What one order judged ok adds to `settled` (its succeeded amount) and `settled_paid`."""

    fen: int
    paid: int


def settled_share(order: OrderView, payouts: Sequence[PayoutView]) -> Settled:
    return Settled(order.amount if order.state == SUCCEEDED else 0, sum(p.paid_sum for p in payouts))


def verdict_moves(moves: Moves, amount: int, judged_before: bool, before: Settled | None,
                  after: Settled | None) -> None:
    """A new verdict on one order: the first one counts it as judged; an ok verdict puts its
    share in the settled sums in place of the one its previous ok verdict put there, any
    other verdict takes that share out."""
    if not judged_before:
        moves.add(Sum.JUDGED, 1, amount)
    if before == after:
        return
    for share, sign in ((before, -1), (after, 1)):
        if share is not None:
            moves.add(Sum.SETTLED, sign, sign * share.fen)
            moves.add(Sum.SETTLED_PAID, sign * int(share.paid > 0), sign * share.paid)
