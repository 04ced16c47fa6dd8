"""The daily batch: one whole day (orders created that day in the recon time zone) from
the projections the feeds built, not from the live services. Aggregation and the filter of
plainly clean orders run set-based in PostgreSQL; only the few remaining orders go through
the same domain rules the near-real-time checker uses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from meshkit.timeconv import utcnow
from recon_svc.alerts import Alerts
from recon_svc.domain import (
    FAILED,
    SUCCEEDED,
    DailyBatchBusy,
    Finding,
    NewDiscrepancy,
    Reason,
    ReportNotFound,
    Source,
    check_order,
    day_bounds,
    held_back,
    ledger_conservation,
    parse_day,
)
from recon_svc.ports import JobLock, ReconStore
from recon_svc.records import DailyGroup, LedgerDay, OrderFacts, UnbalancedAccount
from recon_svc.settings import Settings

log = logging.getLogger(__name__)

_FACTS_CHUNK = 5000


@dataclass(frozen=True)
class Report:
    date: str
    orders: int
    discrepancies: int
    report_json: str
    report_text: str
    created_at: datetime


@dataclass
class _Flagged:
    """What the day's final orders with a finding account for: their own findings explain
    that much of any difference in the day's totals."""

    succeeded_fen: int = 0
    paid_fen: int = 0


class DailyRecon:
    def __init__(self, store: ReconStore, settings: Settings, alerts: Alerts,
                 runner: JobLock | None = None) -> None:
        self.store = store
        self.settings = settings
        self.alerts = alerts
        # One run at a time across replicas (a lease); None runs unguarded (the bench).
        self.runner = runner

    async def get(self, day_text: str) -> Report:
        day = parse_day(day_text)
        stored = await self.store.autocommit.daily.report(day)
        if stored is None:
            raise ReportNotFound(day)
        return Report(stored.date.isoformat(), stored.orders, stored.discrepancies, stored.report_json,
                      stored.text, stored.created_at)

    async def run(self, day_text: str) -> Report:
        """Reconcile one day and store its report; refused (ABORTED) while another run is
        under way, so two replicas asked at once do not scan the day twice and alert twice."""
        day = parse_day(day_text)
        if self.runner is None:
            return await self._run(day)
        async with self.runner.try_hold() as held:
            if not held:
                raise DailyBatchBusy()
            return await self._run(day)

    async def _run(self, day: date) -> Report:
        start, end = day_bounds(day, self.settings.timezone)
        now = utcnow()
        stuck_before = now - timedelta(seconds=self.settings.stuck_after_s)
        clock = _Phases()
        groups, orphans, (ledger, unbalanced) = await self._scan(start, end, now, stuck_before)
        clock.mark("scan")
        found, flagged = await self._judge_suspects([oid for g in groups for oid in g.suspects],
                                                    now, stuck_before)
        found += await self._judge_orphans(orphans)
        clock.mark("judge")
        found += [NewDiscrepancy.of_account(
            a.uid, ledger_conservation(a.credits, a.debits, a.refunds, a.balance), Source.DAILY)
            for a in unbalanced]
        succeeded_fen = sum(g.amount_fen for g in groups if g.state == SUCCEEDED)
        # Orders still in flight may already be paid: only final orders take part.
        paid_fen = sum(g.paid_fen for g in groups if g.state in (SUCCEEDED, FAILED))
        # Differences already explained by an order's own finding are not counted twice.
        unexplained = (paid_fen - flagged.paid_fen) - (succeeded_fen - flagged.succeeded_fen)
        if unexplained:
            found.append(NewDiscrepancy.of_totals(
                f"payouts:{day.isoformat()}",
                f"gateway paid {paid_fen} fen for orders of {day.isoformat()}, succeeded orders "
                f"{succeeded_fen} fen; {unexplained} fen not explained by any order's finding",
                Source.DAILY))

        async with self.store.unit_of_work() as tx:
            new = await tx.discrepancies.record(found)
        self.alerts.publish(new)
        clock.mark("record")
        report = self._report(day.isoformat(), start, end, groups, ledger, found, succeeded_fen, paid_fen)
        report["timings_ms"] = clock.phases
        text = _text(report)
        orders = sum(g.orders for g in groups)
        stored = await self.store.autocommit.daily.save_report(day, orders, len(found), report, text)
        log.info("daily recon %s: %d orders, %d discrepancies (%d new); phases %s ms",
                 day, orders, len(found), len(new), clock.phases)
        return Report(day.isoformat(), orders, len(found), stored.report_json, text, stored.created_at)

    async def _scan(
        self, start: datetime, end: datetime, now: datetime, stuck_before: datetime
    ) -> tuple[list[DailyGroup], list[str], tuple[LedgerDay, list[UnbalancedAccount]]]:
        """Three independent passes over the projections, on three connections at once."""
        daily = self.store.autocommit.daily
        grace = timedelta(seconds=self.settings.grace_s)

        async def ledger_pass() -> tuple[LedgerDay, list[UnbalancedAccount]]:
            return await daily.ledger(start, end), await daily.unbalanced_accounts(start, end)

        return await asyncio.gather(daily.orders(start, end, stuck_before),
                                    daily.orphans(start, end, now - grace), ledger_pass())

    async def _judge_suspects(self, suspects: list[str], now: datetime,
                              stuck_before: datetime) -> tuple[list[NewDiscrepancy], _Flagged]:
        """The orders the SQL did not pass as plainly clean, by the domain rules; and what the
        final ones among them with a finding weigh in the day's totals."""
        facts = await self._facts(suspects)
        refund_grace = timedelta(seconds=self.settings.refund_grace_s)
        found: list[NewDiscrepancy] = []
        flagged = _Flagged()
        for oid in suspects:
            f = facts[oid]
            findings, _ = held_back(self._judge(f, stuck_before), f.terminal_seen, now, refund_grace)
            if findings and f.order is not None and f.order.terminal:
                if f.order.state == SUCCEEDED:
                    flagged.succeeded_fen += f.order.amount
                flagged.paid_fen += sum(p.paid_sum for p in f.payouts)
            found += [NewDiscrepancy.of_order(x, oid, f.order.uid if f.order else 0, Source.DAILY)
                      for x in findings]
        return found, flagged

    async def _judge_orphans(self, orphans: list[str]) -> list[NewDiscrepancy]:
        facts = await self._facts(orphans)
        return [NewDiscrepancy.of_order(x, oid, 0, Source.DAILY)
                for oid in orphans for x in check_order(None, facts[oid].entries, facts[oid].payouts)]

    def _judge(self, f: OrderFacts, stuck_before: datetime) -> list[Finding]:
        if f.order is None:
            return []
        if not f.order.terminal:
            if f.created_at is not None and f.created_at < stuck_before:
                return [Finding(Reason.STUCK_ORDER, f"{f.order.state} since {f.created_at.isoformat()}")]
            return []
        return check_order(f.order, f.entries, f.payouts)

    async def _facts(self, order_ids: list[str]) -> dict[str, OrderFacts]:
        out: dict[str, OrderFacts] = {}
        for i in range(0, len(order_ids), _FACTS_CHUNK):
            async with self.store.unit_of_work() as tx:
                out.update(await tx.checks.facts(order_ids[i:i + _FACTS_CHUNK]))
        return out

    def _report(self, day: str, start: datetime, end: datetime, groups: list[DailyGroup], ledger: LedgerDay,
                found: list[NewDiscrepancy], succeeded_fen: int, paid_fen: int) -> dict[str, Any]:
        by_state: dict[str, dict[str, int]] = defaultdict(lambda: {"orders": 0, "amount_fen": 0})
        by_channel: dict[str, dict[str, int]] = defaultdict(lambda: {"orders": 0, "amount_fen": 0})
        rows = []
        for g in groups:
            for bucket in (by_state[g.state], by_channel[g.channel]):
                bucket["orders"] += g.orders
                bucket["amount_fen"] += g.amount_fen
            rows.append({"state": g.state, "channel": g.channel, "orders": g.orders,
                         "amount_fen": g.amount_fen, "debit_fen": g.debit_fen,
                         "refund_fen": g.refund_fen, "paid_fen": g.paid_fen})
        return {
            "date": day,
            "timezone": self.settings.timezone.key,
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "orders": sum(r["orders"] for r in rows),
            "amount_fen": sum(r["amount_fen"] for r in rows),
            "by_state": dict(by_state),
            "by_channel": dict(by_channel),
            "by_state_channel": rows,
            "ledger": {"entries": ledger.entries, "credits": ledger.credits, "debits": ledger.debits,
                       "refunds": ledger.refunds, "voids": ledger.voids},
            "gateway": {"succeeded_fen": paid_fen, "orders_succeeded_fen": succeeded_fen,
                        "orders_failed": by_state[FAILED]["orders"] if FAILED in by_state else 0},
            "discrepancy_counts": dict(Counter(f.reason for f in found)),
            "discrepancies": [
                {"reason": f.reason, "subject": f.subject, "order_id": f.order_id, "uid": f.uid,
                 "detail": f.detail}
                for f in found
            ],
        }


class _Phases:
    """How long each part of the batch took, for the report and the log."""

    def __init__(self) -> None:
        self.phases: dict[str, int] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round((now - self._last) * 1000)
        self._last = now


def _text(r: dict[str, Any]) -> str:
    lines = [
        f"Daily reconciliation {r['date']} ({r['timezone']}, {r['window']['start']} .. {r['window']['end']})",
        f"Orders: {r['orders']}, {r['amount_fen']} fen",
        f"  {'state':<16}{'channel':<10}{'orders':>10}{'amount fen':>16}{'debited':>16}"
        f"{'refunded':>16}{'paid':>16}",
    ]
    for row in r["by_state_channel"]:
        lines.append(f"  {row['state']:<16}{row['channel']:<10}{row['orders']:>10}{row['amount_fen']:>16}"
                     f"{row['debit_fen']:>16}{row['refund_fen']:>16}{row['paid_fen']:>16}")
    ledger = r["ledger"]
    lines.append(f"Ledger entries that day: {ledger['entries']} (credits {ledger['credits']} fen, debits "
                 f"{ledger['debits']} fen, refunds {ledger['refunds']} fen, voids {ledger['voids']})")
    gw = r["gateway"]
    lines.append(f"Gateway: paid {gw['succeeded_fen']} fen for these orders; succeeded orders "
                 f"{gw['orders_succeeded_fen']} fen")
    lines.append(f"Discrepancies: {len(r['discrepancies'])}")
    for d in r["discrepancies"]:
        who = f"order {d['order_id']}" if d["order_id"] else d["subject"]
        lines.append(f"  {d['reason']:<22}{who}: {d['detail']}")
    return "\n".join(lines) + "\n"
