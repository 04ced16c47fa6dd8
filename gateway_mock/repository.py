"""SQL of the gateway schema. Every payout insert or state change goes to the change feed
in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from gateway_mock.domain import ChannelFaults, Decision, Method, Payout, PayoutRequest, PayoutState
from gateway_mock.ports import MethodsPage, NewPayout, Recorded
from meshkit import admin_store, changefeed, paging

_PAYOUT_COLUMNS = (
    "order_id, uid, channel, method_id, amount_fen, state, failure_reason,"
    " requested_at, created_at, completed_at"
)


def _payout(row: asyncpg.Record) -> Payout:
    return Payout(
        order_id=row["order_id"], uid=row["uid"], channel=row["channel"], method_id=row["method_id"],
        amount_fen=row["amount_fen"], state=PayoutState(row["state"]),
        failure_reason=row["failure_reason"], requested_at=row["requested_at"],
        created_at=row["created_at"], completed_at=row["completed_at"],
    )


def _method(row: asyncpg.Record) -> Method:
    return Method(row["method_id"], row["uid"], row["channel"], row["account_masked"])


class PgGatewayStore:
    """The gateway's PostgreSQL (gateway_mock.ports.GatewayStore)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- payouts ---------------------------------------------------------------------------

    async def insert_payout(
        self, request: PayoutRequest, decision: Decision, async_delay_ms: int, requested_at: datetime
    ) -> Recorded:
        """Record a payout unless the order already has one."""
        processing = decision.state is PayoutState.PROCESSING
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                INSERT INTO payouts (order_id, uid, channel, method_id, amount_fen, state,
                                     failure_reason, complete_at, async_outcome, async_reason,
                                     requested_at, completed_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7,
                        CASE WHEN $8 THEN now() + $9::bigint * interval '1 millisecond' END,
                        $10, $11, $12, CASE WHEN $8 THEN NULL ELSE now() END)
                ON CONFLICT (order_id) DO NOTHING
                RETURNING {_PAYOUT_COLUMNS}
                """,
                request.order_id, request.uid, request.channel, request.method_id, request.amount_fen,
                decision.state.value, decision.failure_reason, processing, async_delay_ms,
                decision.async_outcome.value if decision.async_outcome else None,
                decision.async_reason, requested_at,
            )
            if row is not None:
                payout = _payout(row)
                await changefeed.append(conn, "payout", payout.order_id, payout.feed_payload())
                return Recorded(payout, created=True)
        existing = await self.get_payout(request.order_id)
        # The row that beat us cannot vanish: payouts are never deleted.
        assert existing is not None
        return Recorded(existing, created=False)

    async def insert_payouts(
        self, items: Sequence[NewPayout], requested_at: datetime
    ) -> dict[str, Payout]:
        """insert_payout for many new payouts with distinct order ids,
        in one statement: only orders with no record yet whose method is bound to that uid
        on that channel are recorded, with their change-feed rows. The records created."""
        rows = await self.pool.fetch(
            f"""
            WITH t AS (
                SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                                     $6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[])
                    AS t(order_id, uid, channel, method_id, amount_fen, state, failure_reason,
                         delay_ms, async_outcome, async_reason)
            ), ins AS (
                INSERT INTO payouts (order_id, uid, channel, method_id, amount_fen, state,
                                     failure_reason, complete_at, async_outcome, async_reason,
                                     requested_at, completed_at)
                SELECT t.order_id, t.uid, t.channel, t.method_id, t.amount_fen, t.state,
                       t.failure_reason,
                       CASE WHEN t.state = 'PROCESSING'
                            THEN now() + t.delay_ms * interval '1 millisecond' END,
                       t.async_outcome, t.async_reason, $11,
                       CASE WHEN t.state = 'PROCESSING' THEN NULL ELSE now() END
                FROM t JOIN methods m
                  ON m.method_id = t.method_id AND m.uid = t.uid AND m.channel = t.channel
                ORDER BY t.order_id
                ON CONFLICT (order_id) DO NOTHING
                RETURNING {_PAYOUT_COLUMNS}
            ), feed AS (
                INSERT INTO changes (kind, key, payload)
                SELECT 'payout', ins.order_id, jsonb_build_object(
                    'order_id', ins.order_id, 'uid', ins.uid, 'channel', ins.channel,
                    'method_id', ins.method_id, 'amount_fen', ins.amount_fen, 'state', ins.state,
                    'failure_reason', ins.failure_reason)
                FROM ins ORDER BY ins.order_id
            )
            SELECT * FROM ins
            """,
            [i.request.order_id for i in items], [i.request.uid for i in items],
            [i.request.channel for i in items], [i.request.method_id for i in items],
            [i.request.amount_fen for i in items], [i.decision.state.value for i in items],
            [i.decision.failure_reason for i in items], [i.async_delay_ms for i in items],
            [i.decision.async_outcome.value if i.decision.async_outcome else None for i in items],
            [i.decision.async_reason for i in items], requested_at,
        )
        return {r["order_id"]: _payout(r) for r in rows}

    async def get_payouts(self, order_ids: Sequence[str]) -> dict[str, Payout]:
        rows = await self.pool.fetch(
            f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE order_id = ANY($1::text[])", list(order_ids))
        return {r["order_id"]: _payout(r) for r in rows}

    async def get_payout(self, order_id: str) -> Payout | None:
        row = await self.pool.fetchrow(f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE order_id = $1", order_id)
        return _payout(row) if row else None

    async def complete_due(self, order_ids: list[str] | None = None, limit: int = 500) -> list[Payout]:
        """Finalize PROCESSING payouts whose completion time passed, all of them or only
        those of `order_ids` (compare-and-set on the state, so replicas and concurrent
        queries finalize each row once)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""
                UPDATE payouts p
                SET state = p.async_outcome, failure_reason = p.async_reason, completed_at = now()
                WHERE p.order_id IN (
                    SELECT order_id FROM payouts
                    WHERE state = 'PROCESSING' AND complete_at <= now()
                      AND ($1::text[] IS NULL OR order_id = ANY($1::text[]))
                    ORDER BY complete_at
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED
                )
                AND p.state = 'PROCESSING'
                RETURNING {", ".join("p." + c.strip() for c in _PAYOUT_COLUMNS.split(","))}
                """,
                order_ids, limit,
            )
            done = [_payout(r) for r in rows]
            await changefeed.append_many(conn, [("payout", p.order_id, p.feed_payload()) for p in done])
        return done

    async def list_payouts(
        self, start: datetime | None, end: datetime | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Payout]:
        rows = await self.pool.fetch(
            f"""
            SELECT {_PAYOUT_COLUMNS} FROM payouts
            WHERE ($1::timestamptz IS NULL OR created_at >= $1)
              AND ($2::timestamptz IS NULL OR created_at < $2)
              AND ($3::timestamptz IS NULL OR (created_at, order_id) > ($3, $4::text))
            ORDER BY created_at, order_id
            LIMIT $5
            """,
            start, end, after[0] if after else None, after[1] if after else None, limit,
        )
        return [_payout(r) for r in rows]

    # -- methods ---------------------------------------------------------------------------

    async def get_method(self, method_id: str) -> Method | None:
        row = await self.pool.fetchrow(
            "SELECT method_id, uid, channel, account_masked FROM methods WHERE method_id = $1", method_id)
        return _method(row) if row else None

    async def insert_method(self, method: Method) -> Method:
        """Bind unless bound already; returns what is stored (the caller compares)."""
        row = await self.pool.fetchrow(
            """
            INSERT INTO methods (method_id, uid, channel, account_masked) VALUES ($1, $2, $3, $4)
            ON CONFLICT (method_id) DO NOTHING
            RETURNING method_id, uid, channel, account_masked
            """,
            method.method_id, method.uid, method.channel, method.account_masked,
        )
        if row is not None:
            return _method(row)
        stored = await self.get_method(method.method_id)
        assert stored is not None
        return stored

    async def list_methods(
        self, uid: int, limit: int, after: tuple[datetime, str] | None
    ) -> MethodsPage:
        """A page of the user's methods, oldest binding first, after the keyset position
        `after`; and the next page's token, empty on the last page."""
        at, key = after if after is not None else (None, "")
        rows = await self.pool.fetch(
            "SELECT method_id, uid, channel, account_masked, created_at FROM methods WHERE uid = $1"
            " AND ($2::timestamptz IS NULL OR (created_at, method_id) > ($2, $3))"
            " ORDER BY created_at, method_id LIMIT $4", uid, at, key, limit + 1)
        last = rows[limit - 1] if len(rows) > limit else None
        token = paging.keyset_token(last["created_at"], last["method_id"]) if last else ""
        return MethodsPage([_method(r) for r in rows[:limit]], token)

    # -- faults ----------------------------------------------------------------------------

    async def load_faults(self) -> list[ChannelFaults]:
        rows = await self.pool.fetch("SELECT channel, config::text AS config FROM channel_faults")
        return [ChannelFaults.from_json(r["channel"], _loads(r["config"])) for r in rows]

    async def save_faults(self, faults: ChannelFaults, actor: str) -> None:
        """Replace a channel's faults, audited (old and new settings) in the same transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchval(
                "SELECT config::text FROM channel_faults WHERE channel = $1 FOR UPDATE", faults.channel)
            await conn.execute(
                """
                INSERT INTO channel_faults (channel, config, updated_at) VALUES ($1, $2::jsonb, now())
                ON CONFLICT (channel) DO UPDATE SET config = EXCLUDED.config, updated_at = now()
                """,
                faults.channel, json.dumps(faults.to_json()),
            )
            await admin_store.record(conn, actor, "faults.set", faults.channel,
                                     _loads(old) if old is not None else None, faults.to_json())

    async def admin_audit(self, page_size: int, page_token: str) -> tuple[list[admin_store.AuditEntry], str]:
        return await admin_store.list_audit(self.pool, page_size, page_token)


def _loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
