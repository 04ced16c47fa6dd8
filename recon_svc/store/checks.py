"""The queue of orders to judge (table r_checks), the facts a verdict is made from, and
the verdicts recorded on r_orders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from recon_svc.domain import EntryView, OrderView, PayoutView
from recon_svc.records import DueCheck, OrderFacts, Recheck, Verdict
from recon_svc.store.session import Db, keyed_lookups
from recon_svc.sums import Settled


class CheckQueue:
    def __init__(self, db: Db) -> None:
        self.db = db

    async def take_due(self, horizon: datetime, limit: int) -> list[DueCheck]:
        """Lock up to `limit` checks due by `horizon` for this unit of work."""
        rows = await self.db.fetch(
            """
            SELECT order_id, gen, confirming FROM r_checks WHERE due_at <= $1
            ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED
            """,
            horizon, limit,
        )
        return [DueCheck(r["order_id"], r["gen"], r["confirming"]) for r in rows]

    async def next_due(self) -> datetime | None:
        """When the earliest queued check is due (the first entry of r_checks_due)."""
        value = await self.db.fetchval("SELECT due_at FROM r_checks ORDER BY due_at LIMIT 1")
        return value if isinstance(value, datetime) else None

    async def pending(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM r_checks"))

    async def facts(self, order_ids: Sequence[str]) -> dict[str, OrderFacts]:
        """The projections of these orders, in a unit of work (see keyed_lookups); entries
        and payouts come in no particular order and are sorted here, since an ORDER BY could
        make an index on the sort key look cheaper than the keys'."""
        await keyed_lookups(self.db)
        ids = list(order_ids)
        orders = await self.db.fetch(
            "SELECT order_id, uid, amount, state, conflict_state, created_at, seen_terminal_at,"
            " checked_at, settled_fen, settled_paid FROM r_orders WHERE order_id = ANY($1::text[])",
            ids,
        )
        # `order_id <> ''` is r_entries_order's predicate: without it that index cannot be used.
        entries = await self.db.fetch(
            "SELECT order_id, entry_id, kind, amount FROM r_entries"
            " WHERE order_id = ANY($1::text[]) AND order_id <> ''",
            ids,
        )
        payouts = await self.db.fetch(
            "SELECT order_id, payout_ref, state, amount, paid_count, paid_sum FROM r_payouts"
            " WHERE order_id = ANY($1::text[])",
            ids,
        )
        found: dict[str, list[EntryView]] = {i: [] for i in ids}
        for r in sorted(entries, key=lambda r: r["entry_id"]):
            found[r["order_id"]].append(EntryView(r["kind"], r["amount"], r["entry_id"]))
        paid: dict[str, list[PayoutView]] = {i: [] for i in ids}
        for r in sorted(payouts, key=lambda r: r["payout_ref"]):
            paid[r["order_id"]].append(
                PayoutView(r["state"], r["amount"], r["paid_count"], r["paid_sum"], r["payout_ref"]))
        out = {i: OrderFacts(i, None, None, None, found[i], paid[i]) for i in ids}
        for r in orders:
            i = r["order_id"]
            settled = None if r["settled_fen"] is None else Settled(r["settled_fen"], r["settled_paid"])
            out[i] = OrderFacts(
                i, OrderView(i, r["uid"], r["amount"], r["state"], r["conflict_state"]), r["created_at"],
                r["seen_terminal_at"], found[i], paid[i], r["checked_at"] is not None, settled)
        return out

    async def finish(self, done: Sequence[DueCheck], verdicts: dict[str, Verdict], now: datetime,
                     self_check: bool, rechecks: dict[str, Recheck]) -> None:
        """Record verdicts (with each order's share of the settled sums) and drop the checks
        taken; a check in `rechecks` stays queued until its time instead (something may still
        be on its way)."""
        if verdicts:
            await self.db.execute(
                """
                UPDATE r_orders o SET checked_at = $3, verdict = v.verdict,
                    self_check_due_at = CASE WHEN $4 THEN $3 ELSE o.self_check_due_at END,
                    settled_fen = v.settled_fen, settled_paid = v.settled_paid
                FROM unnest($1::text[], $2::text[], $5::bigint[], $6::bigint[])
                    AS v(order_id, verdict, settled_fen, settled_paid)
                WHERE o.order_id = v.order_id AND o.order_id = ANY($1::text[])
                """,
                list(verdicts), [v.verdict for v in verdicts.values()], now, self_check,
                [v.settled.fen if v.settled else None for v in verdicts.values()],
                [v.settled.paid if v.settled else None for v in verdicts.values()],
            )
        # Each statement joining a table with an unnest() of keys also names the keys as
        # `= ANY(...)`: whichever join PostgreSQL picks, the table is then read by them.
        await self.db.execute(
            """
            DELETE FROM r_checks c USING unnest($1::text[], $2::bigint[]) AS d(order_id, gen)
            WHERE c.order_id = d.order_id AND c.gen = d.gen AND c.order_id = ANY($1::text[])
            """,
            [d.order_id for d in done if d.order_id not in rechecks],
            [d.gen for d in done if d.order_id not in rechecks],
        )
        if rechecks:
            await self.db.execute(
                """
                UPDATE r_checks c SET due_at = l.due_at, confirming = l.confirming
                FROM unnest($1::text[], $2::timestamptz[], $3::bool[]) AS l(order_id, due_at, confirming)
                WHERE c.order_id = l.order_id AND c.order_id = ANY($1::text[])
                """,
                list(rechecks), [r.due_at for r in rechecks.values()],
                [r.confirming for r in rechecks.values()],
            )
