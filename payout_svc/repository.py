"""SQL of the payout schema: the configured rate of each channel."""

from __future__ import annotations

import asyncpg

from meshkit import changefeed
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

    async def set_rate(self, channel: str, rate: ChannelRate) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
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
