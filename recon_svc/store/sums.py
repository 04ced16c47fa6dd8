"""The running sums (table r_totals): moved by the transaction that changes what they
summarise, read by primary key, and recounted from the projections for verification."""

from __future__ import annotations

import asyncpg

from recon_svc import projections
from recon_svc.records import RecountedSums
from recon_svc.store.session import Db
from recon_svc.sums import Moves, Sums


def _sums(rows: list[asyncpg.Record]) -> Sums:
    return Sums.of((r["name"], r["count"], r["fen"]) for r in rows)


class RunningSums:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def add(self, moves: Moves) -> None:
        """Last in the unit of work that moves them (see projections.add_moves)."""
        await projections.add_moves(self.db, moves)

    async def current(self) -> Sums:
        """The running sums: a dozen rows by primary key, whatever the history."""
        return _sums(await self.db.fetch("SELECT name, count, fen FROM r_totals"))


async def running_and_recount(pool: asyncpg.Pool) -> RecountedSums:
    """The running sums and the same sums counted from the projections, in one snapshot
    (so they agree whatever is being applied meanwhile). The recount scans every table:
    for verification only, never for a poll."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        running = await conn.fetch("SELECT name, count, fen FROM r_totals")
        recount = await conn.fetch("SELECT name, count, fen FROM r_totals_recount")
    return RecountedSums(_sums(running), _sums(recount))
