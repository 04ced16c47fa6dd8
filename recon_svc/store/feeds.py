"""Feed positions: how far each followed feed has been applied (table feed_positions)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from recon_svc.records import Position
from recon_svc.store.session import Db


class FeedPositions:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def ensure(self, feeds: Sequence[str]) -> None:
        await self.db.executemany(
            "INSERT INTO feed_positions (feed) VALUES ($1) ON CONFLICT (feed) DO NOTHING",
            [(f,) for f in feeds],
        )

    async def positions(self) -> list[Position]:
        rows = await self.db.fetch(
            "SELECT feed, cursor, applied, updated_at FROM feed_positions ORDER BY feed")
        return [Position(r["feed"], r["cursor"], r["applied"], r["updated_at"]) for r in rows]

    async def cursor_of(self, feed: str) -> str:
        value = await self.db.fetchval("SELECT cursor FROM feed_positions WHERE feed = $1", feed)
        return str(value or "")

    async def lock_at(self, feed: str, cursor: str) -> bool:
        """Lock the feed's position for this transaction if it still stands at `cursor`;
        False when another replica moved it first."""
        stored = await self.db.fetchval(
            "SELECT cursor FROM feed_positions WHERE feed = $1 FOR UPDATE", feed)
        return stored is not None and stored == cursor

    async def advance(self, feed: str, to_cursor: str, applied: int, now: datetime) -> None:
        await self.db.execute(
            "UPDATE feed_positions SET cursor = $2, applied = applied + $3, updated_at = $4"
            " WHERE feed = $1",
            feed, to_cursor, applied, now,
        )
