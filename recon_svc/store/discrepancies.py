"""Discrepancies (table discrepancies): stored once per (reason, subject, source), listed,
and resolved by an operator with an audit entry."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from meshkit import admin_store
from recon_svc.domain import Discrepancy, NewDiscrepancy
from recon_svc.records import AuditPage
from recon_svc.store.session import Db

_COLUMNS = "id, reason, subject, order_id, uid, detail, status, source, note, created_at, updated_at"


def _discrepancy(row: asyncpg.Record) -> Discrepancy:
    return Discrepancy(**{k: row[k] for k in row.keys()})


class DiscrepancyStore:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def record(self, found: Sequence[NewDiscrepancy]) -> list[Discrepancy]:
        """Store findings; returns only those not stored before."""
        if not found:
            return []
        rows = await self.db.fetch(
            f"""
            INSERT INTO discrepancies (reason, subject, order_id, uid, detail, source)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
            ON CONFLICT (reason, subject, source) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            [f.reason for f in found], [f.subject for f in found], [f.order_id for f in found],
            [f.uid for f in found], [f.detail for f in found], [f.source for f in found],
        )
        return [_discrepancy(r) for r in rows]

    async def find(self, status: str, reason: str, order_id: str, source: str, limit: int,
                   before: int | None) -> list[Discrepancy]:
        """Newest first, below id `before` (None: from the newest)."""
        rows = await self.db.fetch(
            f"""
            SELECT {_COLUMNS} FROM discrepancies
            WHERE ($1 = '' OR status = $1) AND ($2 = '' OR reason = $2)
              AND ($3 = '' OR order_id = $3) AND ($4 = '' OR source = $4)
              AND ($6::bigint IS NULL OR id < $6)
            ORDER BY id DESC LIMIT $5
            """,
            status, reason, order_id, source, limit, before,
        )
        return [_discrepancy(r) for r in rows]

    async def open_count(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM discrepancies WHERE status = 'OPEN'"))

    async def resolve(self, discrepancy_id: int, status: str, note: str,
                      actor: str) -> Discrepancy | None:
        """Mark a discrepancy and audit it (old and new status and note); in a unit of work,
        so that the change and its audit entry commit together."""
        old = await self.db.fetchrow(
            "SELECT status, note FROM discrepancies WHERE id = $1 FOR UPDATE", discrepancy_id)
        if old is None:
            return None
        row = await self.db.fetchrow(
            f"""
            UPDATE discrepancies SET status = $2, note = $3, updated_at = now()
            WHERE id = $1 RETURNING {_COLUMNS}
            """,
            discrepancy_id, status, note,
        )
        await admin_store.record(self.db, actor, "discrepancy.resolve", str(discrepancy_id),
                                 {"status": old["status"], "note": old["note"]},
                                 {"status": status, "note": note}, note)
        return _discrepancy(row)

    async def admin_audit(self, page_size: int, page_token: str) -> AuditPage:
        return AuditPage(*await admin_store.list_audit(self.db, page_size, page_token))
