"""The periodic audits' queries: orders stuck before their final state, and accounts whose
entries do not add up to their balance. Both read an index range, never the history."""

from __future__ import annotations

from datetime import datetime

from recon_svc.domain import TERMINAL_RANK
from recon_svc.records import StuckOrder, UnbalancedAccount
from recon_svc.store.session import Db


class AuditQueries:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def flag_stuck(self, created_before: datetime, limit: int) -> list[StuckOrder]:
        """Flag (once) and return orders not final yet that were created before the bound."""
        rows = await self.db.fetch(
            f"""
            UPDATE r_orders o SET stuck_flagged = true
            WHERE o.order_id = ANY(ARRAY(
                SELECT order_id FROM r_orders
                WHERE state_rank < {TERMINAL_RANK} AND NOT stuck_flagged AND created_at < $1
                ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))
            RETURNING o.order_id, o.uid, o.state, o.created_at
            """,
            created_before, limit,
        )
        return [StuckOrder(r["order_id"], r["uid"], r["state"], r["created_at"]) for r in rows]

    async def unbalanced_accounts(self, settled_before: datetime,
                                  limit: int = 1000) -> list[UnbalancedAccount]:
        rows = await self.db.fetch(
            """
            SELECT uid, credits, debits, refunds, balance, last_entry_id FROM r_balances
            WHERE credits - debits + refunds <> balance AND updated_at < $1
            ORDER BY updated_at LIMIT $2
            """,
            settled_before, limit,
        )
        return [UnbalancedAccount(r["uid"], r["credits"], r["debits"], r["refunds"], r["balance"],
                                  r["last_entry_id"]) for r in rows]
