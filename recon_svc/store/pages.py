"""One feed page applied to the projections, in the caller's transaction: the SQL is in
recon_svc/projections.py; this says in which order it runs and what the sums move by."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from recon_svc import projections
from recon_svc.domain import EntryChange, OrderChange, PayoutChange
from recon_svc.store.session import keyed_lookups
from recon_svc.sums import Moves


class PageWriter:
    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db

    async def apply(self, orders: Sequence[tuple[OrderChange, str]], entries: Sequence[EntryChange],
                    payouts: Sequence[PayoutChange], *, now: datetime, due_at: datetime) -> Moves:
        """Project the page's changes and queue the orders they concern; returns how the
        running sums move. In a unit of work (keyed_lookups holds for its transaction)."""
        await keyed_lookups(self.db)
        moves = Moves()
        # Orders first: a debit in the same page then finds its order.
        if orders:
            await projections.apply_orders(self.db, orders, now, due_at, moves)
        if entries:
            await projections.apply_entries(self.db, entries, now, due_at, moves)
        if payouts:
            await projections.apply_payouts(self.db, payouts, now, due_at, moves)
        return moves
