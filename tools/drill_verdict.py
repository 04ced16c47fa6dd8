"""The drill's verdict, from the services' own answers over RPC: every order final and
clean by recon's one definition (recon_svc.domain.check_order, over what the ledger and the
gateway answer), every user's money accounted for, nothing left for the compensation job,
no open recon discrepancy. Pure: the drill collects the answers, this judges them."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.recon.v1 import recon_pb2
from mesh.withdraw.v1 import withdraw_pb2
from recon_svc.domain import EntryView, OrderView, PayoutView, check_order, norm_enum
from tools.loadlib.sampler import TERMINAL
from tools.loadlib.seeding import TestUser


@dataclass
class DrillResult:
    passed: bool
    line: str
    orders: int = 0
    succeeded: int = 0
    failed: int = 0
    lost_fen: int = 0
    double_payouts: int = 0
    discrepancies: int = 0
    problems: list[str] = field(default_factory=list)
    report_dir: Path | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answers:
    """What the services answered about the drill's orders and users."""

    entries: Mapping[str, list[account_pb2.Entry]]          # per order, GetOrderEntries
    payouts: Mapping[str, gateway_pb2.Payout | None]        # per order, QueryPayout
    balances: Mapping[int, int]                             # per uid, GetBalance
    listed: Sequence[gateway_pb2.Payout]                    # ListPayouts of the drill's uids
    discrepancies: Sequence[recon_pb2.Discrepancy]          # open, of the drill's orders
    unattributed: Sequence[recon_pb2.Discrepancy]           # open, without an order, since the start


@dataclass(frozen=True)
class Run:
    """What the drill itself knows about its run."""

    users: Sequence[TestUser]
    confirmed: Collection[str]      # order ids a confirm reply named
    compensated: Collection[str]    # orders the compensation job had to move


class Problems:
    """Broken checks by kind, with examples."""

    def __init__(self) -> None:
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, detail: str) -> None:
        self.examples[kind].append(detail)

    def lines(self) -> list[str]:
        return [f"{kind}: {len(items)} (e.g. {', '.join(items[:3])})"
                for kind, items in self.examples.items()]


def state_of(order: withdraw_pb2.Order) -> str:
    return withdraw_pb2.OrderState.Name(order.state).removeprefix("ORDER_STATE_")


def refund_of(order: withdraw_pb2.Order) -> str:
    """PENDING, REFUNDED, VOIDED; "-" for an order that owes none."""
    if order.refund == withdraw_pb2.REFUND_STATE_UNSPECIFIED:
        return "-"
    return withdraw_pb2.RefundState.Name(order.refund).removeprefix("REFUND_STATE_")


def reason_of(d: recon_pb2.Discrepancy) -> str:
    return recon_pb2.DiscrepancyReason.Name(d.reason_kind).removeprefix("DISCREPANCY_REASON_").lower()


def source_of(d: recon_pb2.Discrepancy) -> str:
    return recon_pb2.DiscrepancySource.Name(d.source_kind).removeprefix("DISCREPANCY_SOURCE_").lower()


def order_view(order: withdraw_pb2.Order) -> OrderView:
    return OrderView(order.order_id, order.uid, order.amount_fen, state_of(order))


def entry_view(entry: account_pb2.Entry) -> EntryView:
    return EntryView(norm_enum(account_pb2.EntryKind.Name(entry.kind)), entry.amount_fen, entry.entry_id)


def payout_view(payout: gateway_pb2.Payout) -> PayoutView:
    return PayoutView.queried(norm_enum(gateway_pb2.PayoutState.Name(payout.state)), payout.amount_fen)


def paid_records(listed: Sequence[gateway_pb2.Payout]) -> dict[str, list[gateway_pb2.Payout]]:
    paid: dict[str, list[gateway_pb2.Payout]] = defaultdict(list)
    for payout in listed:
        if payout.state == gateway_pb2.PAYOUT_STATE_SUCCEEDED:
            paid[payout.order_id].append(payout)
    return paid


def judge_orders(orders: Mapping[str, withdraw_pb2.Order], answers: Answers, run: Run,
                 problems: Problems) -> None:
    """Every order final, and clean by recon's definition over the ledger's entries and
    every payout record the gateway holds for it."""
    listed: dict[str, list[gateway_pb2.Payout]] = defaultdict(list)
    for payout in answers.listed:
        listed[payout.order_id].append(payout)
    for order in orders.values():
        if state_of(order) not in TERMINAL:
            problems.add("not terminal", f"{order.order_id} {state_of(order)}")
            continue
        records = listed.get(order.order_id) or [p for p in [answers.payouts.get(order.order_id)] if p]
        entries = [entry_view(e) for e in answers.entries.get(order.order_id, [])]
        for finding in check_order(order_view(order), entries, [payout_view(p) for p in records]):
            problems.add(f"order not clean: {finding.reason.value}", f"{order.order_id} ({finding.detail})")
    for order_id in sorted(set(run.confirmed) - set(orders)):
        problems.add("confirmed order missing from ListOrders", order_id)
    for order_id in sorted(set(paid_records(answers.listed)) - set(orders)):
        problems.add("payout without a drill order", order_id)


def count_double_payouts(orders: Mapping[str, withdraw_pb2.Order], answers: Answers) -> int:
    """Payouts beyond the one a SUCCEEDED order is owed: extra ones, any for a FAILED order,
    any for an order the drill never made."""
    paid = paid_records(answers.listed)
    count = sum(len(records) for order_id, records in paid.items() if order_id not in orders)
    for order in orders.values():
        records = paid.get(order.order_id, [])
        if state_of(order) == "SUCCEEDED":
            count += max(len(records) - 1, 0)
        elif state_of(order) == "FAILED":
            record = answers.payouts.get(order.order_id)
            if records or (record is not None and record.state == gateway_pb2.PAYOUT_STATE_SUCCEEDED):
                count += 1
    return count


def judge_money(orders: Mapping[str, withdraw_pb2.Order], answers: Answers, run: Run,
                problems: Problems) -> int:
    """Per user, funding = balance + paid out; the gateway's total is the SUCCEEDED orders'.
    Returns the fen not accounted for."""
    succeeded = [o for o in orders.values() if state_of(o) == "SUCCEEDED"]
    paid_out: dict[int, int] = defaultdict(int)
    for order in succeeded:
        paid_out[order.uid] += order.amount_fen
    lost_fen = 0
    for user in run.users:
        diff = user.funded_fen - answers.balances.get(user.uid, 0) - paid_out[user.uid]
        if diff:
            lost_fen += abs(diff)
            problems.add("conservation (funding != balance + paid out)", f"uid {user.uid}: {diff:+d} fen")
    gateway_fen = gateway_paid_fen(answers)
    orders_fen = sum(o.amount_fen for o in succeeded)
    if gateway_fen != orders_fen:
        problems.add("gateway total differs from SUCCEEDED orders",
                     f"gateway {gateway_fen} fen, orders {orders_fen} fen")
    return lost_fen


def gateway_paid_fen(answers: Answers) -> int:
    return sum(p.amount_fen for records in paid_records(answers.listed).values() for p in records)


def judge_aftermath(orders: Mapping[str, withdraw_pb2.Order], answers: Answers, run: Run,
                    problems: Problems) -> None:
    for order_id in sorted(set(run.compensated) & set(orders)):
        problems.add("needed the compensation job (the normal paths left it unfinished)", order_id)
    for record in answers.discrepancies:
        problems.add("open recon discrepancy",
                     f"{reason_of(record)} {record.order_id}: {record.detail[:80]}")


def figures(orders: Mapping[str, withdraw_pb2.Order], answers: Answers, run: Run,
            problems: list[str]) -> dict[str, Any]:
    """The figures behind the verdict, for the report (and the e2e test's own checks)."""
    failed = [o for o in orders.values() if state_of(o) == "FAILED"]
    return {
        "orders_by_state": dict(Counter(state_of(o) for o in orders.values())),
        "orders_confirmed_by_reply": len(run.confirmed),
        "funded_fen": sum(u.funded_fen for u in run.users),
        "balances_fen": sum(answers.balances.values()),
        "succeeded_fen": sum(o.amount_fen for o in orders.values() if state_of(o) == "SUCCEEDED"),
        "gateway_succeeded_fen": gateway_paid_fen(answers),
        "gateway_payouts_of_drill_users": len(answers.listed),
        "failed_with_debit": sum(1 for o in failed if any(
            e.kind == account_pb2.ENTRY_KIND_DEBIT for e in answers.entries.get(o.order_id, []))),
        "failed_refund_states": dict(Counter(refund_of(o) for o in failed)),
        "open_discrepancies_for_drill_orders": len(answers.discrepancies),
        "orders_moved_by_compensation": len(set(run.compensated) & set(orders)),
        "open_discrepancies_without_order_since_start": [
            {"reason": reason_of(d), "detail": d.detail, "source": source_of(d)}
            for d in answers.unattributed],
        "problems": problems,
    }


def verdict(orders: Mapping[str, withdraw_pb2.Order], answers: Answers, run: Run) -> DrillResult:
    problems = Problems()
    judge_orders(orders, answers, run, problems)
    lost_fen = judge_money(orders, answers, run, problems)
    judge_aftermath(orders, answers, run, problems)
    lines = problems.lines()
    succeeded = sum(1 for o in orders.values() if state_of(o) == "SUCCEEDED")
    failed = sum(1 for o in orders.values() if state_of(o) == "FAILED")
    double_payouts = count_double_payouts(orders, answers)
    counts = (f"orders={len(orders)} succeeded={succeeded} failed={failed} lost_fen={lost_fen} "
              f"double_payouts={double_payouts} discrepancies={len(answers.discrepancies)}")
    passed = not lines and len(orders) > 0
    if passed:
        line = f"DRILL PASS {counts}"
    else:
        what = "; ".join(lines) if lines else "no orders were created"
        line = f"DRILL FAIL {what} ({counts})"
    return DrillResult(passed, line, len(orders), succeeded, failed, lost_fen, double_payouts,
                       len(answers.discrepancies), lines, checks=figures(orders, answers, run, lines))
