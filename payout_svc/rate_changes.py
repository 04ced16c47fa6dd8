"""Four-eyes channel-rate changes: a SetChannelRate request proposed by one operator is
applied when a different one approves it, with SetChannelRate's checks and audit, in one
transaction with the approval."""

from __future__ import annotations

from typing import Any

import asyncpg

from meshkit import validate
from meshkit.admin_store import Applied, ChangeStore
from meshkit.four_eyes import Change
from payout_svc.domain import ChannelRate, ChannelStats
from payout_svc.repository import RatesRepository, rate_json
from payout_svc.service import PayoutAdmin

KIND = "rate"
MAX_REASON_LEN = 1000


def rate_request(change: Change) -> tuple[str, float, bool]:
    """(channel, rate_per_second, unlimited) of a stored proposal."""
    data: dict[str, Any] = change.payload
    return str(data["channel"]), float(data["rate_per_second"]), bool(data["unlimited"])


class RateChanges:
    def __init__(self, admin: PayoutAdmin, repo: RatesRepository, store: ChangeStore) -> None:
        self.admin = admin
        self.repo = repo
        self.store = store

    async def propose(self, channel: str, rate_per_second: float, unlimited: bool, reason: str,
                      proposer: str) -> Change:
        self.admin.check_rate(channel, rate_per_second, unlimited)
        validate.text("reason", reason, max_len=MAX_REASON_LEN, multiline=True)
        payload = {"channel": channel, "rate_per_second": rate_per_second, "unlimited": unlimited}
        return await self.store.propose(channel, payload, reason, proposer)

    async def approve(self, change_id: str, approver: str) -> tuple[Change, ChannelStats]:
        async def apply(conn: asyncpg.Connection, change: Change) -> Applied[ChannelRate]:
            channel, per_second, unlimited = rate_request(change)
            rate = self.admin.check_rate(channel, per_second, unlimited)
            old = await self.repo.set_rate_in(conn, channel, rate)
            return Applied(rate_json(old), rate_json(rate), rate)

        change, rate = await self.store.approve(change_id, approver, apply)
        # Other replicas pick it up on their next refresh; this one at once.
        self.admin.rates.rates[change.target] = rate
        return change, await self.admin.stats_of(change.target)

    async def reject(self, change_id: str, actor: str, reason: str) -> Change:
        return await self.store.reject(change_id, actor, reason)

    async def list(self, page_size: int, page_token: str) -> tuple[list[Change], str]:
        return await self.store.list(page_size, page_token)
