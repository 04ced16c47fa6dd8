"""SQL of the payout schema: the configured rate of each channel."""

from __future__ import annotations

import asyncpg

from meshkit import changefeed


class RatesRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def all_rates(self) -> dict[str, float]:
        rows = await self.pool.fetch("SELECT channel, rate_per_second FROM channel_config")
        return {r["channel"]: float(r["rate_per_second"]) for r in rows}

    async def seed_rates(self, rates: dict[str, float]) -> None:
        """Configured defaults for channels that have no rate yet; never overwrites one."""
        await self.pool.executemany(
            "INSERT INTO channel_config (channel, rate_per_second) VALUES ($1, $2)"
            " ON CONFLICT (channel) DO NOTHING",
            list(rates.items()),
        )

    async def set_rate(self, channel: str, rate: float) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO channel_config (channel, rate_per_second, updated_at) VALUES ($1, $2, now())
                ON CONFLICT (channel) DO UPDATE
                SET rate_per_second = EXCLUDED.rate_per_second, updated_at = now()
                """,
                channel, rate,
            )
            await changefeed.append(conn, "channel_rate", channel,
                                    {"channel": channel, "rate_per_second": rate})
