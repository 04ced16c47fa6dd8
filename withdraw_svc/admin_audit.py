"""The admin audit of withdraw_svc beyond the gate: compensation runs, and the listing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import asyncpg

from meshkit import admin_store
from meshkit.admin_store import AuditEntry
from withdraw_svc.compensation import CompensationAction

# Enough order ids to follow up a run; the counts say how many there were in all.
MAX_AUDITED_ORDER_IDS = 100


class WithdrawAudit:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def compensation_run(self, actor: str, dry_run: bool, min_age_s: int, ran: bool,
                               actions: Sequence[CompensationAction]) -> None:
        # Each action commits on its own as the job goes; the run is recorded when it ends.
        acted = [a.order_id for a in actions if a.action.value != "wait"]
        async with self.pool.acquire() as conn:
            await admin_store.record(conn, actor, "compensation.run", "", None, {
                "dry_run": dry_run, "min_age_s": min_age_s, "ran": ran,
                "actions": dict(Counter(a.action.value for a in actions)),
                "order_ids": acted[:MAX_AUDITED_ORDER_IDS],
            })

    async def list(self, page_size: int, page_token: str) -> tuple[list[AuditEntry], str]:
        return await admin_store.list_audit(self.pool, page_size, page_token)
