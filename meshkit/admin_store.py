"""SQL of the admin tables every schema has (meshkit/migrations/001_admin.sql): the audit
of admin actions and the four-eyes proposals. An approval applies its change with the
caller's `apply`, on the same connection, so the change, its audit and the proposal's
move to APPLIED commit together or not at all."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg

from meshkit import paging, validate
from meshkit.four_eyes import (
    MAX_DECISION_REASON_LEN,
    Change,
    ChangeState,
    change_not_found,
    check_approver,
    check_change_id,
    check_decidable,
    check_operator,
    new_change_id,
)

T = TypeVar("T")


@dataclass(frozen=True)
class AuditEntry:
    audit_id: int
    at: datetime
    actor: str
    action: str
    target: str
    old: Any
    new: Any
    reason: str


@dataclass(frozen=True)
class Applied(Generic[T]):
    """What an approval's `apply` did: the state before and after (audited) and its result."""

    old: Any
    new: Any
    result: T


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


async def record(conn: asyncpg.Connection, actor: str, action: str, target: str, old: Any, new: Any,
                 reason: str = "") -> None:
    """One audit row, in the caller's transaction."""
    await conn.execute(
        "INSERT INTO admin_audit (actor, action, target, old_json, new_json, reason) "
        "VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)",
        actor or "anonymous", action, target, _json(old), _json(new), reason,
    )


async def list_audit(pool: asyncpg.Pool, page_size: int, page_token: str) -> tuple[list[AuditEntry], str]:
    """A page of the audit, newest first; the token is the last id shown."""
    size = paging.PERSON_LIST.of(page_size)
    before = paging.row_of(page_token)
    rows = await pool.fetch(
        "SELECT id, at, actor, action, target, old_json::text AS old, new_json::text AS new, reason "
        "FROM admin_audit WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        before, size + 1,
    )
    entries = [
        AuditEntry(int(r["id"]), r["at"], r["actor"], r["action"], r["target"],
                   json.loads(r["old"]) if r["old"] is not None else None,
                   json.loads(r["new"]) if r["new"] is not None else None, r["reason"])
        for r in rows[:size]
    ]
    token = paging.row_token(entries[-1].audit_id) if len(rows) > size else ""
    return entries, token


class PoolAudit:
    """The audit as a port for use cases whose change is not a PostgreSQL transaction of
    this service (a Redis replay, a compensation run): recorded when the action ends."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, actor: str, action: str, target: str, old: Any, new: Any,
                     reason: str = "") -> None:
        async with self.pool.acquire() as conn:
            await record(conn, actor, action, target, old, new, reason)

    async def list(self, page_size: int, page_token: str) -> tuple[list[AuditEntry], str]:
        return await list_audit(self.pool, page_size, page_token)


_CHANGE_COLUMNS = ("id, change_id, kind, target, payload::text AS payload, reason, proposer, created_at, "
                   "expires_at, state, decided_by, decided_at, decision_reason")


def _change(row: asyncpg.Record) -> Change:
    return Change(
        change_id=row["change_id"], kind=row["kind"], target=row["target"],
        payload=json.loads(row["payload"]), reason=row["reason"], proposer=row["proposer"],
        created_at=row["created_at"], expires_at=row["expires_at"], state=ChangeState(row["state"]),
        decided_by=row["decided_by"] or "", decided_at=row["decided_at"],
        decision_reason=row["decision_reason"],
    )


class ChangeStore:
    """The proposals of one kind ("gate", "rate") in this service's schema."""

    def __init__(self, pool: asyncpg.Pool, kind: str, ttl_s: int) -> None:
        self.pool = pool
        self.kind = kind
        self.ttl_s = ttl_s

    async def propose(self, target: str, payload: dict[str, Any], reason: str, proposer: str) -> Change:
        """Store a validated request; nothing else changes (the proposal is audited)."""
        check_operator(proposer, "proposing")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO admin_changes (change_id, kind, target, payload, reason, proposer, expires_at) "
                f"VALUES ($1, $2, $3, $4::jsonb, $5, $6, now() + make_interval(secs => $7)) "
                f"RETURNING {_CHANGE_COLUMNS}",
                new_change_id(), self.kind, target, _json(payload), reason, proposer, float(self.ttl_s),
            )
            change = _change(row)
            await record(conn, proposer, f"{self.kind}.propose", change.change_id, None,
                         {"target": target, "request": payload, "expires_at": change.expires_at.isoformat()},
                         reason)
        return change

    async def approve(
        self, change_id: str, approver: str,
        apply: Callable[[asyncpg.Connection, Change], Awaitable[Applied[T]]],
    ) -> tuple[Change, T]:
        """Apply the proposal with `apply` and mark it APPLIED, one transaction: whatever
        `apply` refuses (validation, a stale expected_version) rolls everything back and the
        proposal stays PROPOSED."""
        check_change_id(change_id)
        check_operator(approver, "approving")
        await self._expire(change_id)
        async with self.pool.acquire() as conn, conn.transaction():
            change, expired = await self._locked(conn, change_id)
            check_decidable(change, expired)
            check_approver(change, approver)
            applied = await apply(conn, change)
            decided = await self._decide(conn, change, ChangeState.APPLIED, approver, "")
            await record(conn, approver, f"{self.kind}.approve", change.target, applied.old,
                         applied.new,
                         f"{change.reason} (change {change.change_id} proposed by {change.proposer}, "
                         f"approved by {approver})")
        return decided, applied.result

    async def reject(self, change_id: str, actor: str, reason: str) -> Change:
        check_change_id(change_id)
        validate.text("reason", reason, max_len=MAX_DECISION_REASON_LEN, multiline=True)
        check_operator(actor, "rejecting")
        await self._expire(change_id)
        async with self.pool.acquire() as conn, conn.transaction():
            change, expired = await self._locked(conn, change_id)
            check_decidable(change, expired)
            decided = await self._decide(conn, change, ChangeState.REJECTED, actor, reason)
            await record(conn, actor, f"{self.kind}.reject", change.change_id,
                         {"request": change.payload, "proposer": change.proposer}, None, reason)
        return decided

    async def list(self, page_size: int, page_token: str) -> tuple[list[Change], str]:
        size = paging.PERSON_LIST.of(page_size)
        before = paging.row_of(page_token)
        await self._expire(None)
        rows = await self.pool.fetch(
            f"SELECT {_CHANGE_COLUMNS} FROM admin_changes WHERE kind = $1 "
            f"AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            self.kind, before, size + 1,
        )
        token = paging.row_token(rows[size - 1]["id"]) if len(rows) > size else ""
        return [_change(r) for r in rows[:size]], token

    async def _expire(self, change_id: str | None) -> None:
        # Its own statement, committed before the decision is tried: a refused approval of
        # an expired change rolls back, and the change must still read EXPIRED afterwards.
        await self.pool.execute(
            "UPDATE admin_changes SET state = 'EXPIRED' WHERE kind = $1 AND state = 'PROPOSED' "
            "AND expires_at <= now() AND ($2::text IS NULL OR change_id = $2)",
            self.kind, change_id,
        )

    async def _locked(self, conn: asyncpg.Connection, change_id: str) -> tuple[Change, bool]:
        row = await conn.fetchrow(
            f"SELECT {_CHANGE_COLUMNS}, expires_at <= now() AS expired FROM admin_changes "
            f"WHERE change_id = $1 AND kind = $2 FOR UPDATE",
            change_id, self.kind,
        )
        if row is None:
            raise change_not_found(change_id)
        return _change(row), bool(row["expired"])

    async def _decide(self, conn: asyncpg.Connection, change: Change, state: ChangeState, actor: str,
                      reason: str) -> Change:
        # Compare-and-set on the state: of two approvers racing, one moves it.
        row = await conn.fetchrow(
            f"UPDATE admin_changes SET state = $2, decided_by = $3, decided_at = now(), "
            f"decision_reason = $4 WHERE change_id = $1 AND state = 'PROPOSED' RETURNING {_CHANGE_COLUMNS}",
            change.change_id, state.value, actor, reason,
        )
        if row is None:
            raise change_not_found(change.change_id)
        return _change(row)
