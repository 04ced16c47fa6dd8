"""The ledger's use cases against an in-memory fake of their own port (account_svc.ports),
no PostgreSQL: a refund follows only a FAILED order, happens once, voids an order that was
never debited; a deduct is exactly one debit per order id, a short balance writes nothing.
The SQL behind the port is tested against PostgreSQL in tests/integration/test_account_*."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from account_svc.domain import Entry, Kind, RefundOutcome
from account_svc.ports import BatchDebit, CreditWrite, KeyTaken
from account_svc.service import Ledger
from campaign.tokens import RewardGrant
from meshkit.errors import Conflict, FailedPrecondition

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class FakeStatements:
    """Accounts and entries in memory, with the unique keys the schema enforces."""

    def __init__(self, balances: dict[int, int]) -> None:
        self.balances = dict(balances)
        self.entries: list[Entry] = []
        self.locked: list[int] = []

    def _append(self, uid: int | None, kind: Kind, amount: int, order_id: str,
                refund_of: int | None = None) -> Entry:
        entry = Entry(len(self.entries) + 1, uid, kind, amount, None, None, order_id, refund_of,
                      None if uid is None else self.balances[uid], NOW)
        self.entries.append(entry)
        return entry

    async def debit(self, order_id: str, uid: int, amount_fen: int) -> Entry | None:
        if await self.debit_or_void(order_id) is not None:
            raise KeyTaken("entries_debit_order")  # the unique index on the order id
        if self.balances.get(uid, 0) < amount_fen:
            return None
        self.balances[uid] -= amount_fen
        return self._append(uid, Kind.DEBIT, amount_fen, order_id)

    async def debit_or_void(self, order_id: str) -> Entry | None:
        return next((e for e in self.entries
                     if e.order_id == order_id and e.kind in (Kind.DEBIT, Kind.VOID)), None)

    async def insert_void(self, order_id: str) -> Entry | None:
        if await self.debit_or_void(order_id) is not None:
            return None
        return self._append(None, Kind.VOID, 0, order_id)

    async def lock_account(self, uid: int) -> int | None:
        self.locked.append(uid)
        return self.balances.get(uid)

    async def refund_of(self, debit_id: int) -> Entry | None:
        return next((e for e in self.entries if e.kind is Kind.REFUND and e.refund_of == debit_id), None)

    async def insert_refund(self, debit: Entry) -> Entry:
        assert debit.uid is not None and debit.order_id is not None
        self.balances[debit.uid] += debit.amount_fen
        return self._append(debit.uid, Kind.REFUND, debit.amount_fen, debit.order_id, debit.entry_id)

    async def balance(self, uid: int) -> int:
        return self.balances.get(uid, 0)

    async def credit(self, grants: Sequence[RewardGrant], *, all_or_nothing: bool,
                     balance_of: int = 0) -> CreditWrite:
        raise NotImplementedError

    async def debit_batch(self, items: Sequence[tuple[str, int, int]]) -> dict[str, BatchDebit]:
        raise NotImplementedError

    async def list_entries(self, uid: int, below_entry_id: int, limit: int) -> list[Entry]:
        raise NotImplementedError

    async def order_entries(self, order_id: str) -> list[Entry]:
        return [e for e in self.entries if e.order_id == order_id]

    async def orders_entries(self, order_ids: Sequence[str]) -> list[Entry]:
        raise NotImplementedError


class FakeStore:
    def __init__(self, statements: FakeStatements) -> None:
        self._statements = statements
        self.transactions = 0

    @property
    def statements(self) -> FakeStatements:
        return self._statements

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeStatements]:
        self.transactions += 1
        yield self._statements

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FakeStatements]:
        yield self._statements


class OrderStates:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states

    async def state_of(self, order_id: str) -> str | None:
        return self.states.get(order_id)


def ledger(balances: dict[int, int], states: dict[str, str] | None = None) -> tuple[Ledger, FakeStore]:
    store = FakeStore(FakeStatements(balances))
    orders = OrderStates(states) if states is not None else None
    return Ledger(store, {}, 3600, orders=orders), store


async def test_deduct_debits_once_per_order_id() -> None:
    ledger_, store = ledger({7: 1000})
    entry, replayed = await ledger_.deduct("o-1", 7, 300)
    assert (entry.kind, entry.amount_fen, entry.balance_after_fen, replayed) == (Kind.DEBIT, 300, 700, False)
    again, replayed = await ledger_.deduct("o-1", 7, 300)
    assert again == entry and replayed
    assert store.statements.balances[7] == 700
    with pytest.raises(Conflict):
        await ledger_.deduct("o-1", 7, 301)  # the order id with other content


async def test_a_short_balance_is_refused_and_writes_nothing() -> None:
    ledger_, store = ledger({7: 100})
    with pytest.raises(FailedPrecondition) as info:
        await ledger_.deduct("o-2", 7, 300)
    assert info.value.reason == "INSUFFICIENT_BALANCE"
    assert store.statements.entries == [] and store.statements.balances[7] == 100


async def test_refund_puts_the_money_back_once_in_one_unit_of_work() -> None:
    ledger_, store = ledger({7: 1000}, {"o-3": "FAILED"})
    debit, _ = await ledger_.deduct("o-3", 7, 400)
    outcome, refund, replayed = await ledger_.refund("o-3")
    assert (outcome, refund.kind, refund.refund_of, replayed) == (RefundOutcome.REFUNDED, Kind.REFUND,
                                                                   debit.entry_id, False)
    assert store.transactions == 1 and store.statements.locked == [7]
    outcome, again, replayed = await ledger_.refund("o-3")
    assert (outcome, again, replayed) == (RefundOutcome.REFUNDED, refund, True)
    assert store.statements.balances[7] == 1000


async def test_refund_of_an_order_never_debited_voids_it() -> None:
    ledger_, store = ledger({7: 1000}, {"o-4": "FAILED"})
    outcome, void, replayed = await ledger_.refund("o-4")
    assert (outcome, void.kind, replayed) == (RefundOutcome.VOIDED, Kind.VOID, False)
    with pytest.raises(FailedPrecondition) as info:
        await ledger_.deduct("o-4", 7, 100)  # a late debit of a voided order
    assert info.value.reason == "ORDER_VOIDED"
    assert store.statements.balances[7] == 1000


@pytest.mark.parametrize(("state", "reason"), [("PAYING", "ORDER_NOT_FAILED"), (None, "ORDER_UNKNOWN")])
async def test_refund_of_an_order_not_failed_is_refused_before_any_write(state: str | None,
                                                                        reason: str) -> None:
    ledger_, store = ledger({7: 1000}, {} if state is None else {"o-5": state})
    await ledger_.deduct("o-5", 7, 400)
    with pytest.raises(FailedPrecondition) as info:
        await ledger_.refund("o-5")
    assert info.value.reason == reason
    assert store.transactions == 0 and store.statements.balances[7] == 600
