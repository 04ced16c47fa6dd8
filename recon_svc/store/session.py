"""What every recon repository runs its statements on, and the planner setting its keyed
lookups need."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

# A transaction's connection (unit of work) or the pool (each statement commits alone).
Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def keyed_lookups(conn: Db) -> None:
    """For the rest of this transaction, plan every statement as the keyed lookup it is. The
    lookups by order id into r_entries and r_payouts have no unique index to go by, so
    without fresh statistics (autovacuum off, never analyzed) PostgreSQL guesses that an
    array of 500 keys matches most of the table and scans all of it, once per batch. No
    sequential scans, then, and no JIT compilation (which such guesses would trigger too)."""
    await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL jit = off")
