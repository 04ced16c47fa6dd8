"""SQL of the payout schema: the configured rate of each channel."""

from __future__ import annotations

import asyncpg

from meshkit import admin_store, changefeed
from payout_svc.domain import ChannelRate


class RatesRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def all_rates(self) -> dict[str, ChannelRate]:
        rows = await self.pool.fetch("SELECT channel, rate_per_second, unlimited FROM channel_config")
        return {r["channel"]: ChannelRate(float(r["rate_per_second"]), bool(r["unlimited"])) for r in rows}

    async def seed_rates(self, rates: dict[str, ChannelRate]) -> None:
        """Configured defaults for channels that have no rate yet; never overwrites one."""
        await self.pool.executemany(
            "INSERT INTO channel_config (channel, rate_per_second, unlimited) VALUES ($1, $2, $3)"
            " ON CONFLICT (channel) DO NOTHING",
            [(channel, rate.per_second, rate.unlimited) for channel, rate in rates.items()],
        )

    async def set_rate(self, channel: str, rate: ChannelRate, actor: str, reason: str) -> None:
        """A direct SetChannelRate (dev meshes only), audited in the same transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await self.set_rate_in(conn, channel, rate)
            await admin_store.record(conn, actor, "rate.set", channel, rate_json(old), rate_json(rate),
                                     reason)

    async def set_rate_in(self, conn: asyncpg.Connection, channel: str,
                          rate: ChannelRate) -> ChannelRate | None:
        """The channel's rate before (None: none configured), set to `rate` in the caller's
        transaction, with its change-feed row."""
        row = await conn.fetchrow(
            "SELECT rate_per_second, unlimited FROM channel_config WHERE channel = $1 FOR UPDATE", channel)
        old = ChannelRate(float(row["rate_per_second"]), bool(row["unlimited"])) if row else None
        await conn.execute(
            """
            INSERT INTO channel_config (channel, rate_per_second, unlimited, updated_at)
            VALUES ($1, $2, $3, now())
            ON CONFLICT (channel) DO UPDATE
            SET rate_per_second = EXCLUDED.rate_per_second, unlimited = EXCLUDED.unlimited,
                updated_at = now()
            """,
            channel, rate.per_second, rate.unlimited,
        )
        await changefeed.append(conn, "channel_rate", channel,
                                {"channel": channel, "rate_per_second": rate.per_second,
                                 "unlimited": rate.unlimited})
        return old


def rate_json(rate: ChannelRate | None) -> dict[str, object] | None:
    return None if rate is None else {"rate_per_second": rate.per_second, "unlimited": rate.unlimited}
