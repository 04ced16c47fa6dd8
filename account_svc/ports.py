"""The ports of the ledger's use cases: what they need from storage, the typed records it
answers with, and the two ways a write can lose a race. account_svc.repository is the
PostgreSQL adapter; unit tests put fakes of these in its place."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from account_svc.domain import Entry, StoredCredit
from campaign.tokens import RewardGrant


class KeyTaken(Exception):
    """A unique index refused the insert: a concurrent writer got the key first."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


class Contention(Exception):
    """Deadlock or serialization failure: the transaction was rolled back; run it again."""


@dataclass(frozen=True)
class CreditWrite:
    """What one credit statement found and did."""

    # The credits already stored for the batch's reward ids, as seen before writing.
    stored: dict[str, StoredCredit]
    # The balance after the statement of each credited uid (and of the uid asked about);
    # empty from the bulk path's statement for all-new batches, which nobody asks.
    balances: dict[int, int]


@dataclass(frozen=True)
class BatchDebit:
    """What the batch statement did with one order id."""

    order_id: str
    # The new debit (debited), or the debit or void already there (taken); None when short.
    entry: Entry | None
    new: bool
    # The balance left for this item when it was refused for want of funds.
    balance_fen: int = 0


class LedgerStatements(Protocol):
    """The ledger's reads and writes on one database handle: on the pool each call is its
    own statement (one round trip, autocommit); in a transaction, the transaction's."""

    async def credit(self, grants: Sequence[RewardGrant], *, all_or_nothing: bool,
                     balance_of: int = 0, expect_fresh: bool = False) -> CreditWrite: ...
    async def debit(self, order_id: str, uid: int, amount_fen: int) -> Entry | None: ...
    async def debit_batch(self, items: Sequence[tuple[str, int, int]]) -> dict[str, BatchDebit]: ...
    async def debit_or_void(self, order_id: str) -> Entry | None: ...
    async def insert_void(self, order_id: str) -> Entry | None: ...
    async def lock_account(self, uid: int) -> int | None: ...
    async def refund_of(self, debit_id: int) -> Entry | None: ...
    async def insert_refund(self, debit: Entry) -> Entry: ...
    async def balance(self, uid: int) -> int: ...
    async def list_entries(self, uid: int, below_entry_id: int, limit: int) -> list[Entry]: ...
    async def order_entries(self, order_id: str) -> list[Entry]: ...
    async def orders_entries(self, order_ids: Sequence[str]) -> list[Entry]: ...


class LedgerStore(Protocol):
    """Where the statements run: the pool, one transaction (the unit of work of a refund),
    or a connection held by a long-running writer."""

    @property
    def statements(self) -> LedgerStatements: ...
    def transaction(self) -> AbstractAsyncContextManager[LedgerStatements]: ...
    def connection(self) -> AbstractAsyncContextManager[LedgerStatements]: ...
