"""The self-check queue on r_orders: a lease, claimed rows move their due time ahead, so a
replica that dies mid-batch leaves them due again when its lease runs out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from recon_svc.domain import OrderView
from recon_svc.records import SelfCheckLease
from recon_svc.store.session import Db


class SelfCheckQueue:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def claim(self, now: datetime, lease_s: float, limit: int) -> SelfCheckLease:
        """Lease up to `limit` due orders (one statement: atomic on its own)."""
        lease = now + timedelta(seconds=lease_s)
        # `= ANY(ARRAY(...))` rather than `IN (...)`: the outer rows are then fetched by
        # primary key, where a join with the subquery may be planned as a scan of r_orders.
        rows = await self.db.fetch(
            """
            UPDATE r_orders o SET self_check_due_at = $2
            WHERE o.order_id = ANY(ARRAY(
                SELECT order_id FROM r_orders WHERE self_check_due_at <= $1
                ORDER BY self_check_due_at LIMIT $3 FOR UPDATE SKIP LOCKED))
            RETURNING o.order_id, o.uid, o.amount, o.state, o.conflict_state
            """,
            now, lease, limit,
        )
        return SelfCheckLease([OrderView(r["order_id"], r["uid"], r["amount"], r["state"],
                                         r["conflict_state"]) for r in rows], lease)

    async def finish(self, order_ids: Sequence[str], lease: datetime, now: datetime,
                     retry_at: datetime | None) -> None:
        # Only the holder of a lease clears it; a re-check queued meanwhile stays queued.
        await self.db.execute(
            """
            UPDATE r_orders SET self_check_due_at = $4,
                self_checked_at = CASE WHEN $4::timestamptz IS NULL THEN $3 ELSE self_checked_at END
            WHERE order_id = ANY($1::text[]) AND self_check_due_at = $2
            """,
            list(order_ids), lease, now, retry_at,
        )
