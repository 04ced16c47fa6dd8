"""SQL of withdraw_svc. Every state change is one compare-and-set statement; the triggers in
migrations/001_withdraw.sql add its history row, its change-feed row and (on FAILED) its
refund job in the same transaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from meshkit import admin_store, changefeed, order_states, paging
from withdraw_svc.domain import (
    OPEN_STATES,
    FailureReason,
    GateConfig,
    Order,
    OrderState,
    RefundState,
    StateChange,
    TransitionRefused,
    checked_sources,
    owes_refund,
    version_mismatch,
)
from withdraw_svc.records import (
    GateAuditEntry,
    GateAuditPage,
    InFlightJob,
    NewOrder,
    PayoutJob,
    PayoutRow,
    RefundJob,
    RefundRow,
    StuckCount,
)

_ORDER_COLS = (
    "o.order_id, o.uid, o.request_id, o.amount_fen, o.channel, o.method_id, o.state, "
    "o.failure_reason, o.created_at, o.updated_at"
)
_REFUND_STATE = (
    "(SELECT CASE WHEN r.done_at IS NULL THEN 'PENDING' ELSE r.outcome END "
    " FROM outbox r WHERE r.kind = 'REFUND' AND r.order_id = o.order_id) AS refund_state"
)
_SELECT_ORDER = f"SELECT {_ORDER_COLS}, {_REFUND_STATE} FROM orders o"
_SELECT_ORDER_WITH_HISTORY = (
    f"SELECT {_ORDER_COLS}, {_REFUND_STATE}, h.h_from, h.h_to, h.h_reason, h.h_at FROM orders o "
    "LEFT JOIN LATERAL (SELECT array_agg(from_state ORDER BY id) AS h_from, "
    "array_agg(to_state ORDER BY id) AS h_to, array_agg(reason ORDER BY id) AS h_reason, "
    "array_agg(created_at ORDER BY id) AS h_at FROM order_history WHERE order_id = o.order_id) h ON true "
    "WHERE o.order_id = $1"
)


def _sql_list(states: Sequence[OrderState]) -> str:
    return ", ".join(f"'{s.value}'" for s in states)


# The states a statement below moves between, each pair checked against the state machine
# once, at import: the SQL then only spells out what the domain allows.
_OPEN = _sql_list(OPEN_STATES)
_OWES_REFUND = _sql_list([OrderState(s) for s in sorted(order_states.OWES_REFUND)])
_CREATED = OrderState(order_states.INITIAL).value
_DEDUCTED_FROM, = checked_sources([OrderState.PENDING_DEDUCT], OrderState.PENDING_PAYOUT)
_BEGUN_FROM, = checked_sources([OrderState.PENDING_PAYOUT], OrderState.PAYING)
_SUCCEEDED_FROM, = checked_sources([OrderState.PAYING], OrderState.SUCCEEDED)
_PAYOUT_FAILED_FROM = ", ".join(
    f"'{s}'" for s in checked_sources([OrderState.PENDING_PAYOUT, OrderState.PAYING], OrderState.FAILED))


def _order(row: asyncpg.Record) -> Order:
    refund = row.get("refund_state")
    return Order(
        order_id=row["order_id"], uid=row["uid"], request_id=row["request_id"],
        amount_fen=row["amount_fen"], channel=row["channel"], method_id=row["method_id"],
        state=OrderState(row["state"]), failure_reason=row["failure_reason"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        refund_state=RefundState(refund or ""),
    )


class UnpublishedPayouts:
    """PAYOUT jobs claimed for publishing, in a transaction that holds them until
    mark_published (or until it rolls back, and then they are claimed again)."""

    def __init__(self, conn: asyncpg.Connection, jobs: list[PayoutRow]) -> None:
        self._conn = conn
        self.jobs = jobs

    async def mark_published(self, stream_ids: Sequence[str]) -> None:
        """Each job's stream entry id, in the order of `jobs`."""
        await self._conn.execute(
            "UPDATE outbox SET published_at = now(), stream_id = s.stream_id "
            "FROM unnest($1::bigint[], $2::text[]) AS s(id, stream_id) WHERE outbox.id = s.id",
            [j.outbox_id for j in self.jobs], list(stream_ids),
        )


class ClaimedRefunds:
    """REFUND jobs locked for settling, in a transaction that holds them until the claim
    ends: a worker that dies mid-way releases them, and they are simply claimed again."""

    def __init__(self, conn: asyncpg.Connection, jobs: list[RefundRow]) -> None:
        self._conn = conn
        self.jobs = jobs

    async def done(self, row: RefundRow, outcome: str) -> None:
        await self._conn.execute(
            "UPDATE outbox SET done_at = now(), outcome = $2, attempts = attempts + 1, last_error = '' "
            "WHERE id = $1 AND done_at IS NULL", row.outbox_id, outcome,
        )
        await changefeed.append(self._conn, "order_refund", row.order_id,
                                {"order_id": row.order_id, "outcome": outcome})

    async def retry_after(self, row: RefundRow, error: str, backoff_s: float) -> None:
        await self._conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, "
            "next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
            row.outbox_id, error[:500], backoff_s,
        )


class Repository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- orders: reads ---------------------------------------------------------------

    async def get_order(self, order_id: str, *, with_history: bool = False) -> Order | None:
        if not with_history:
            row = await self.pool.fetchrow(f"{_SELECT_ORDER} WHERE o.order_id = $1", order_id)
            return _order(row) if row is not None else None
        # One statement, one round trip: the order and its history as arrays (order_history's
        # index on order_id), instead of a second query on the same connection.
        row = await self.pool.fetchrow(_SELECT_ORDER_WITH_HISTORY, order_id)
        if row is None:
            return None
        return _order(row).with_history(tuple(
            StateChange(OrderState(f) if f else None, OrderState(t), reason, at)
            for f, t, reason, at in zip(row["h_from"] or (), row["h_to"] or (), row["h_reason"] or (),
                                        row["h_at"] or (), strict=True)
        ))

    async def get_by_request(self, uid: int, request_id: str) -> Order | None:
        row = await self.pool.fetchrow(
            f"{_SELECT_ORDER} WHERE o.uid = $1 AND o.request_id = $2", uid, request_id
        )
        return _order(row) if row else None

    async def list_orders(
        self, uid: int, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Order]:
        if after is None:
            rows = await self.pool.fetch(
                f"{_SELECT_ORDER} WHERE o.uid = $1 "
                "ORDER BY o.created_at DESC, o.order_id DESC LIMIT $2", uid, limit,
            )
        else:
            rows = await self.pool.fetch(
                f"{_SELECT_ORDER} WHERE o.uid = $1 AND (o.created_at, o.order_id) < ($2, $3) "
                "ORDER BY o.created_at DESC, o.order_id DESC LIMIT $4", uid, after[0], after[1], limit,
            )
        return [_order(r) for r in rows]

    async def open_orders_older_than(
        self, min_age_s: int, limit: int, after: tuple[datetime, str] | None
    ) -> list[Order]:
        """Non-terminal orders created more than min_age_s ago, oldest first (keyset paged)."""
        after_ts, after_id = after if after else (None, "")
        rows = await self.pool.fetch(
            f"{_SELECT_ORDER} WHERE o.state IN ({_OPEN}) "
            "AND o.created_at < now() - make_interval(secs => $1) "
            "AND ($2::timestamptz IS NULL OR (o.created_at, o.order_id) > ($2, $3)) "
            "ORDER BY o.created_at, o.order_id LIMIT $4",
            float(min_age_s), after_ts, after_id, limit,
        )
        return [_order(r) for r in rows]

    async def unconfirmed_deducts(self, min_age_s: int, limit: int) -> list[Order]:
        """PENDING_DEDUCT orders created more than min_age_s ago, oldest first: one range of
        orders_open_by_age (state, created_at), whatever the history."""
        rows = await self.pool.fetch(
            f"{_SELECT_ORDER} WHERE o.state = '{_CREATED}' "
            "AND o.created_at < now() - make_interval(secs => $1) ORDER BY o.created_at LIMIT $2",
            float(min_age_s), limit,
        )
        return [_order(r) for r in rows]

    async def failed_unrefunded(self, min_age_s: int, limit: int) -> list[Order]:
        """FAILED orders whose refund job is not done, job older than min_age_s."""
        rows = await self.pool.fetch(
            f"{_SELECT_ORDER} JOIN outbox j ON j.order_id = o.order_id AND j.kind = 'REFUND' "
            f"WHERE j.done_at IS NULL AND o.state IN ({_OWES_REFUND}) "
            "AND j.created_at < now() - make_interval(secs => $1) ORDER BY j.id LIMIT $2",
            float(min_age_s), limit,
        )
        return [_order(r) for r in rows]

    async def ensure_refund_jobs(self) -> int:
        """Write the refund job of any FAILED order lacking one. The trigger makes this
        impossible; the job checks anyway, because a lost refund is lost money."""
        result = await self.pool.execute(
            "INSERT INTO outbox (kind, order_id) "
            f"SELECT 'REFUND', o.order_id FROM orders o WHERE o.state IN ({_OWES_REFUND}) AND NOT EXISTS "
            "(SELECT 1 FROM outbox r WHERE r.kind = 'REFUND' AND r.order_id = o.order_id) "
            "ON CONFLICT (kind, order_id) DO NOTHING"
        )
        return int(result.split()[-1])

    async def stuck_counts(self, bands_s: Sequence[int]) -> list[StuckCount]:
        rows = await self.pool.fetch(
            "SELECT s.state, b.band, count(o.order_id) AS n "
            "FROM unnest($1::text[]) AS s(state) CROSS JOIN unnest($2::bigint[]) AS b(band) "
            "LEFT JOIN orders o ON o.state = s.state "
            " AND o.created_at < now() - make_interval(secs => b.band) "
            "GROUP BY s.state, b.band ORDER BY s.state, b.band",
            [s.value for s in OPEN_STATES], list(bands_s),
        )
        return [StuckCount(OrderState(r["state"]), int(r["band"]), int(r["n"])) for r in rows]

    # -- orders: transitions ------------------------------------------------------------

    async def insert_order(self, new: NewOrder) -> Order | None:
        """The new order in PENDING_DEDUCT, or None when (uid, request_id) already exists."""
        row = await self.pool.fetchrow(
            "INSERT INTO orders AS o (order_id, uid, request_id, amount_fen, channel, method_id, "
            " state, state_reason) VALUES ($1, $2, $3, $4, $5, $6, 'PENDING_DEDUCT', 'created') "
            f"ON CONFLICT (uid, request_id) DO NOTHING RETURNING {_ORDER_COLS}",
            new.order_id, new.uid, new.request_id, new.amount_fen, new.channel, new.method_id,
        )
        return _order(row) if row else None

    async def insert_orders(self, news: Sequence[NewOrder]) -> list[Order | None]:
        """insert_order for many orders in one statement and one commit."""
        ordered = sorted(news, key=lambda n: (n.uid, n.request_id))  # one lock order for all
        rows = await self.pool.fetch(
            "INSERT INTO orders AS o (order_id, uid, request_id, amount_fen, channel, method_id, "
            " state, state_reason) "
            "SELECT t.order_id, t.uid, t.request_id, t.amount_fen, t.channel, t.method_id, "
            " 'PENDING_DEDUCT', 'created' "
            "FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[]) "
            " WITH ORDINALITY AS t(order_id, uid, request_id, amount_fen, channel, method_id, n) "
            "ORDER BY t.n "
            f"ON CONFLICT (uid, request_id) DO NOTHING RETURNING {_ORDER_COLS}",
            [n.order_id for n in ordered], [n.uid for n in ordered], [n.request_id for n in ordered],
            [n.amount_fen for n in ordered], [n.channel for n in ordered], [n.method_id for n in ordered],
        )
        created = {r["order_id"]: _order(r) for r in rows}
        return [created.get(n.order_id) for n in news]

    async def mark_deducted_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Order | None]:
        """mark_deducted for many orders in one statement and one commit."""
        ordered = sorted(items, key=lambda i: i[0])
        rows = await self.pool.fetch(
            "WITH i AS ("
            " SELECT DISTINCT ON (order_id) order_id, payload"
            " FROM unnest($1::text[], $2::text[]) AS t(order_id, payload) ORDER BY order_id"
            "), o AS ("
            f" UPDATE orders SET state = '{OrderState.PENDING_PAYOUT}', state_reason = 'deducted' FROM i"
            f" WHERE orders.order_id = i.order_id AND orders.state = '{_DEDUCTED_FROM}'"
            f" RETURNING {_ORDER_COLS.replace('o.', 'orders.')}, i.payload"
            "), job AS ("
            " INSERT INTO outbox (kind, order_id, payload) SELECT 'PAYOUT', o.order_id, o.payload::jsonb"
            " FROM o ON CONFLICT (kind, order_id) DO NOTHING"
            f") SELECT {_ORDER_COLS} FROM o",
            [i[0] for i in ordered], [json.dumps(i[1]) for i in ordered],
        )
        moved = {r["order_id"]: _order(r) for r in rows}
        return [moved.get(order_id) for order_id, _ in items]

    async def mark_deducted(self, order_id: str, payout_payload: dict[str, Any]) -> Order | None:
        """PENDING_DEDUCT -> PENDING_PAYOUT and its PAYOUT job, in one statement (one
        transaction). None when the order was not PENDING_DEDUCT any more."""
        row = await self.pool.fetchrow(
            "WITH o AS ("
            f" UPDATE orders SET state = '{OrderState.PENDING_PAYOUT}', state_reason = 'deducted'"
            f" WHERE order_id = $1 AND state = '{_DEDUCTED_FROM}'"
            f" RETURNING {_ORDER_COLS.replace('o.', '')}"
            "), job AS ("
            " INSERT INTO outbox (kind, order_id, payload) SELECT 'PAYOUT', o.order_id, $2::jsonb FROM o"
            " ON CONFLICT (kind, order_id) DO NOTHING"
            f") SELECT {_ORDER_COLS} FROM o",
            order_id, json.dumps(payout_payload),
        )
        return _order(row) if row else None

    async def transition(
        self, order_id: str, from_states: Sequence[OrderState], to_state: OrderState, reason: str
    ) -> Order | None:
        """Compare-and-set to a state that owes no refund; None when the order was in none
        of from_states."""
        if owes_refund(to_state):
            raise TransitionRefused(f"{to_state} owes a refund: use fail_order")
        row = await self.pool.fetchrow(
            "UPDATE orders o SET state = $3, state_reason = $4 "
            f"WHERE o.order_id = $1 AND o.state = ANY($2::text[]) RETURNING {_ORDER_COLS}",
            order_id, checked_sources(from_states, to_state), to_state.value, reason,
        )
        return _order(row) if row else None

    async def fail_order(
        self, order_id: str, from_states: Sequence[OrderState], failure_reason: str, detail: str = ""
    ) -> Order | None:
        """The one way an order becomes FAILED: compare-and-set, and (by trigger, same
        transaction) history, change feed and the REFUND job. None when the CAS lost."""
        row = await self.pool.fetchrow(
            "UPDATE orders o SET state = 'FAILED', failure_reason = $3, state_reason = $4 "
            f"WHERE o.order_id = $1 AND o.state = ANY($2::text[]) RETURNING {_ORDER_COLS}, "
            "'PENDING' AS refund_state",
            order_id, checked_sources(from_states, OrderState.FAILED), failure_reason,
            f"{failure_reason}: {detail}" if detail else failure_reason,
        )
        return _order(row) if row else None

    async def get_orders(self, order_ids: Sequence[str]) -> dict[str, Order]:
        rows = await self.pool.fetch(f"{_SELECT_ORDER} WHERE o.order_id = ANY($1::text[])", list(order_ids))
        return {r["order_id"]: _order(r) for r in rows}

    async def begin_payouts(self, order_ids: Sequence[str]) -> dict[str, Order]:
        """PENDING_PAYOUT -> PAYING for each distinct order id, one statement: the orders
        this statement moved (the others were in another state or do not exist)."""
        rows = await self.pool.fetch(
            "WITH i AS (SELECT DISTINCT order_id FROM unnest($1::text[]) AS t(order_id) ORDER BY order_id) "
            f"UPDATE orders o SET state = '{OrderState.PAYING}', state_reason = 'payout started' FROM i "
            f"WHERE o.order_id = i.order_id AND o.state = '{_BEGUN_FROM}' RETURNING {_ORDER_COLS}",
            list(order_ids),
        )
        return {r["order_id"]: _order(r) for r in rows}

    async def settle_payouts(self, items: Sequence[tuple[str, OrderState, str]]) -> dict[str, Order]:
        """(order_id, SUCCEEDED or FAILED, detail) with distinct order ids, one statement:
        PAYING -> SUCCEEDED, or PENDING_PAYOUT/PAYING -> FAILED (its refund job by trigger,
        as fail_order). The orders this statement moved."""
        assert len({i[0] for i in items}) == len(items), "distinct order ids"
        failed = FailureReason.PAYOUT_FAILED.value
        rows = await self.pool.fetch(
            "WITH i AS ("
            " SELECT order_id, to_state, failure_reason, state_reason"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
            "  AS t(order_id, to_state, failure_reason, state_reason) ORDER BY order_id"
            ") UPDATE orders o SET state = i.to_state, failure_reason = i.failure_reason,"
            " state_reason = i.state_reason FROM i "
            f"WHERE o.order_id = i.order_id AND ((i.to_state = '{OrderState.SUCCEEDED}'"
            f" AND o.state = '{_SUCCEEDED_FROM}')"
            f" OR (i.to_state = '{OrderState.FAILED}' AND o.state IN ({_PAYOUT_FAILED_FROM}))) "
            f"RETURNING {_ORDER_COLS}, "
            f"CASE WHEN o.state IN ({_OWES_REFUND}) THEN 'PENDING' END AS refund_state",
            [i[0] for i in items], [i[1].value for i in items],
            [failed if i[1] is OrderState.FAILED else "" for i in items],
            [
                (f"{failed}: {i[2]}" if i[2] else failed) if i[1] is OrderState.FAILED else "payout succeeded"
                for i in items
            ],
        )
        return {r["order_id"]: _order(r) for r in rows}

    # -- payout outbox --------------------------------------------------------------------

    @asynccontextmanager
    async def claim_unpublished(self, limit: int) -> AsyncIterator[UnpublishedPayouts]:
        """Claim unpublished PAYOUT jobs (FOR UPDATE SKIP LOCKED, so replicas share the work)
        for the caller to publish and mark published. The transaction spans the publish: a
        crash before commit republishes, never loses."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, order_id, payload::text AS payload FROM outbox "
                "WHERE kind = 'PAYOUT' AND published_at IS NULL AND done_at IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", limit,
            )
            yield UnpublishedPayouts(
                conn, [PayoutRow(r["id"], r["order_id"], json.loads(r["payload"])) for r in rows]
            )

    async def republish_all_in_flight(self, batch: int = 5000) -> int:
        """After a Redis wipe: every PAYOUT job in flight goes out again. A job stays open
        until its order settles, so this is every PENDING_PAYOUT order and every PAYING one
        (a payout the gateway accepted asynchronously was followed only in Redis), however
        many wipes came before. A worker that meets a PAYING order asks the gateway before
        anything else, so the extra message can never pay twice. Jobs published after the
        wipe was noticed (by another replica meanwhile) are on the new streams: left alone."""
        noticed = await self.pool.fetchval("SELECT clock_timestamp()")
        total = 0
        while True:
            result = await self.pool.execute(
                "UPDATE outbox SET published_at = NULL WHERE id IN ("
                " SELECT id FROM outbox WHERE kind = 'PAYOUT' AND published_at IS NOT NULL"
                " AND done_at IS NULL AND published_at < $1 ORDER BY published_at, id LIMIT $2)",
                noticed, batch,
            )
            n = int(result.split()[-1])
            total += n
            if n < batch:
                return total

    async def payout_job(self, order_id: str) -> PayoutJob | None:
        row = await self.pool.fetchrow(
            "SELECT published_at IS NOT NULL AS published, done_at IS NOT NULL AS done, "
            "coalesce(stream_id, '') AS stream_id FROM outbox WHERE kind = 'PAYOUT' AND order_id = $1",
            order_id,
        )
        return PayoutJob(row["published"], row["done"], row["stream_id"]) if row else None

    async def requeue_payout(self, order_id: str, state: OrderState) -> bool:
        """Re-open the order's PAYOUT job for the relay to publish again, if the order is
        still in `state`. The order row is share-locked for the statement: a transition
        racing it waits, and then its trigger closes the job again, so a job is never left
        open behind a settled order."""
        result = await self.pool.execute(
            "WITH o AS (SELECT order_id FROM orders WHERE order_id = $1 AND state = $2 FOR SHARE) "
            "UPDATE outbox j SET published_at = NULL, stream_id = NULL, done_at = NULL, outcome = NULL "
            "FROM o WHERE j.kind = 'PAYOUT' AND j.order_id = o.order_id",
            order_id, state.value,
        )
        return result == "UPDATE 1"

    async def in_flight_jobs(
        self, older_than_s: int, below_cap: int, after: tuple[datetime, int] | None, limit: int,
    ) -> list[InFlightJob]:
        """PAYOUT jobs published more than older_than_s ago whose order has not settled (the
        job closes when it does) and that were republished fewer than below_cap times, in
        (published_at, id) order after `after`: one range of outbox_payout_sweep, nothing
        else read."""
        query = (
            "SELECT id, order_id, payload->>'channel' AS channel, coalesce(stream_id, '') AS stream_id, "
            "published_at, republished "
            "FROM outbox WHERE kind = 'PAYOUT' AND published_at IS NOT NULL AND done_at IS NULL "
            "AND published_at < now() - make_interval(secs => $1) AND republished < $2 "
        )
        order = "ORDER BY published_at, id LIMIT $3"
        if after is None:
            rows = await self.pool.fetch(query + order, float(older_than_s), below_cap, limit)
        else:
            rows = await self.pool.fetch(
                query + "AND published_at >= $4 AND (published_at, id) > ($4, $5) " + order,
                float(older_than_s), below_cap, limit, after[0], after[1],
            )
        return [InFlightJob(r["id"], r["order_id"], r["channel"], r["stream_id"], r["published_at"],
                            r["republished"]) for r in rows]

    async def claim_republish(self, jobs: Sequence[InFlightJob], below_cap: int) -> int:
        """Put jobs back for publishing, counting it: a compare-and-set on the counter and
        stream id each job was seen with, so of two relays that saw the same job one wins,
        and the cap holds."""
        if not jobs:
            return 0
        result = await self.pool.execute(
            "UPDATE outbox SET published_at = NULL, republished = outbox.republished + 1 "
            "FROM unnest($1::bigint[], $2::int[], $3::text[]) AS s(id, seen, stream_id) "
            "WHERE outbox.id = s.id AND outbox.republished = s.seen AND outbox.republished < $4 "
            "AND coalesce(outbox.stream_id, '') = s.stream_id "
            "AND outbox.published_at IS NOT NULL AND outbox.done_at IS NULL",
            [j.outbox_id for j in jobs], [j.republished for j in jobs], [j.stream_id for j in jobs],
            below_cap,
        )
        return int(result.split()[-1])

    async def reopen_lost(self, jobs: Sequence[InFlightJob]) -> int:
        """Put jobs whose entries a Redis failover lost back for publishing, outside the
        sweep's cap (the loss is Redis's, not a sign the job is stuck): a compare-and-set on
        the stream id each was seen with, so of two relays that saw the same loss one
        wins, and a job republished meanwhile (new stream id) is left alone."""
        if not jobs:
            return 0
        result = await self.pool.execute(
            "UPDATE outbox SET published_at = NULL "
            "FROM unnest($1::bigint[], $2::text[]) AS s(id, stream_id) "
            "WHERE outbox.id = s.id AND coalesce(outbox.stream_id, '') = s.stream_id "
            "AND outbox.published_at IS NOT NULL AND outbox.done_at IS NULL",
            [j.outbox_id for j in jobs], [j.stream_id for j in jobs],
        )
        return int(result.split()[-1])

    # -- refund outbox --------------------------------------------------------------------

    @asynccontextmanager
    async def claim_refunds(
        self, limit: int, order_ids: Sequence[str] | None
    ) -> AsyncIterator[ClaimedRefunds]:
        """Claim due REFUND jobs (FOR UPDATE SKIP LOCKED: a replica or the compensation job
        working on the same job skips it) for the caller to settle while the rows stay
        locked. The jobs of `order_ids` (the compensation job's, due or not) are waited for
        instead: the job must learn how its refund ended, not report it pending because a
        relay had it in hand; once that relay commits, a settled job no longer matches."""
        async with self.pool.acquire() as conn, conn.transaction():
            if order_ids is None:
                rows = await conn.fetch(
                    "SELECT id, order_id, attempts FROM outbox "
                    "WHERE kind = 'REFUND' AND done_at IS NULL "
                    "AND (next_attempt_at IS NULL OR next_attempt_at <= now()) "
                    "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", limit,
                )
            else:
                rows = await conn.fetch(
                    "SELECT id, order_id, attempts FROM outbox "
                    "WHERE kind = 'REFUND' AND done_at IS NULL AND order_id = ANY($1::text[]) "
                    "ORDER BY id FOR UPDATE", list(order_ids),
                )
            yield ClaimedRefunds(conn, [RefundRow(r["id"], r["order_id"], r["attempts"]) for r in rows])

    async def refund_job(self, order_id: str) -> RefundJob | None:
        row = await self.pool.fetchrow(
            "SELECT id, done_at IS NOT NULL AS done, coalesce(outcome, '') AS outcome, attempts, last_error "
            "FROM outbox WHERE kind = 'REFUND' AND order_id = $1", order_id,
        )
        if row is None:
            return None
        return RefundJob(row["id"], row["done"], row["outcome"], row["attempts"], row["last_error"])

    # -- gate ------------------------------------------------------------------------------

    async def ensure_gate(self, default: GateConfig) -> None:
        await self.pool.execute(
            "INSERT INTO gate_config (id, config, version) VALUES (1, $1::jsonb, 1) "
            "ON CONFLICT (id) DO NOTHING", json.dumps(default.to_json()),
        )

    async def load_gate(self) -> GateConfig:
        row = await self.pool.fetchrow("SELECT config::text AS config, version FROM gate_config WHERE id = 1")
        if row is None:
            raise LookupError("gate_config row is missing")
        return GateConfig.from_json(json.loads(row["config"]), int(row["version"]))

    async def update_gate(
        self, build: Callable[[GateConfig], GateConfig], expected_version: int, actor: str, reason: str,
    ) -> GateConfig:
        """Swap the config for `build(current)` and write its audit rows in one transaction
        (see update_gate_in)."""
        async with self.pool.acquire() as conn, conn.transaction():
            _, new = await self.update_gate_in(conn, build, expected_version, actor, reason,
                                               action="gate.set")
        return new

    async def update_gate_in(
        self, conn: asyncpg.Connection, build: Callable[[GateConfig], GateConfig], expected_version: int,
        actor: str, reason: str, *, action: str | None,
    ) -> tuple[GateConfig, GateConfig]:
        """(old, new): the config swapped for `build(current)` and its gate audit row, in the
        caller's transaction, the row locked, so a field the caller did not name keeps the
        value it has now, not the one it had when the caller read it. A stale
        expected_version is refused (GATE_VERSION_MISMATCH); whatever `build` raises rolls
        back. `action` names the admin_audit row to write (None: the caller writes its own,
        as an approval does)."""
        row = await conn.fetchrow(
            "SELECT config::text AS config, version FROM gate_config WHERE id = 1 FOR UPDATE"
        )
        if row is None:
            raise LookupError("gate_config row is missing")
        old_version = int(row["version"])
        if expected_version and expected_version != old_version:
            raise version_mismatch(expected_version, old_version)
        old = GateConfig.from_json(json.loads(row["config"]), old_version)
        new = build(old)
        version = old_version + 1
        await conn.execute(
            "UPDATE gate_config SET config = $1::jsonb, version = $2, updated_at = now() WHERE id = 1",
            json.dumps(new.to_json()), version,
        )
        await conn.execute(
            "INSERT INTO gate_audit (actor, old_config, new_config, old_version, new_version, reason) "
            "VALUES ($1, $2::jsonb, $3::jsonb, $4, $5, $6)",
            actor, row["config"], json.dumps(new.to_json()), old_version, version, reason,
        )
        await changefeed.append(conn, "gate", "gate", {"version": version, "actor": actor,
                                                      "config": new.to_json()})
        stored = GateConfig.from_json(new.to_json(), version)
        if action is not None:
            await admin_store.record(conn, actor, action, "gate", gate_audit_json(old),
                                     gate_audit_json(stored), reason)
        return old, stored

    async def gate_audit(self, limit: int, before: int | None) -> GateAuditPage:
        """A page of the gate audit, newest first, below row id `before`; and the next page's
        token (the last id shown), empty on the last page."""
        rows = await self.pool.fetch(
            "SELECT id, actor, created_at, old_config::text AS old, new_config::text AS new, "
            "old_version, new_version, reason FROM gate_audit "
            "WHERE ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $1", limit + 1, before,
        )
        token = paging.row_token(rows[limit - 1]["id"]) if len(rows) > limit else ""
        return GateAuditPage([
            GateAuditEntry(
                r["actor"], r["created_at"],
                GateConfig.from_json(json.loads(r["old"]), int(r["old_version"])) if r["old"] else None,
                GateConfig.from_json(json.loads(r["new"]), int(r["new_version"])),
                r["reason"],
            )
            for r in rows[:limit]
        ], token)


def gate_audit_json(config: GateConfig) -> dict[str, object]:
    """A gate config as the admin audit shows it: its fields and its version."""
    return {**config.to_json(), "version": config.version}
