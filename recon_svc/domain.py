"""Reconciliation rules: what one order, its ledger entries and its gateway payouts must
look like once the order is final. Pure functions over plain values, shared by the
near-real-time checker, the self-check and the daily batch, so the three can never judge
the same facts differently."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Any

from meshkit import order_states, paging, validate
from meshkit.errors import Code, DomainError, InvalidArgument, NotFound


class Reason(StrEnum):
    """Discrepancy classes. The values are the stored and published reason strings."""

    MISSING_DEBIT = "missing_debit"
    DOUBLE_DEBIT = "double_debit"
    DEBIT_WITHOUT_ORDER = "debit_without_order"
    MISSING_REFUND = "missing_refund"
    DOUBLE_REFUND = "double_refund"
    REFUND_ON_SUCCEEDED = "refund_on_succeeded"
    PAYOUT_WITHOUT_DEBIT = "payout_without_debit"
    DOUBLE_PAYOUT = "double_payout"
    AMOUNT_MISMATCH = "amount_mismatch"
    STATE_MISMATCH = "state_mismatch"
    STUCK_ORDER = "stuck_order"
    CONSERVATION = "conservation"


class Source(StrEnum):
    REALTIME = "realtime"
    SELF_CHECK = "self_check"
    DAILY = "daily"


class Status(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"
    ACCEPTED = "ACCEPTED"


SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
PROCESSING = "PROCESSING"
DEBIT, REFUND, CREDIT, VOID = "DEBIT", "REFUND", "CREDIT", "VOID"

# Order states ranked along the state machine (meshkit/order_states.py): a projection only
# ever moves forward, so a change delivered late can never drag an order back.
ORDER_RANK = order_states.RANK
TERMINAL_RANK = order_states.TERMINAL_RANK
PAYOUT_RANK = {PROCESSING: 1, SUCCEEDED: 2, FAILED: 2}


@dataclass(frozen=True)
class OrderView:
    order_id: str
    uid: int
    amount: int
    state: str
    # A second, different terminal state reported for the same order (a terminal state
    # changed): impossible by the state machine, so always a discrepancy.
    conflict_state: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in order_states.TERMINAL


@dataclass(frozen=True)
class EntryView:
    kind: str
    amount: int
    entry_id: int = 0


@dataclass(frozen=True)
class PayoutView:
    """One payout record at the gateway. `paid_count` is how many times the feed reported
    it reaching SUCCEEDED: a record turns SUCCEEDED once, so 2 means the money left twice."""

    state: str
    amount: int
    paid_count: int = 0
    paid_sum: int = 0
    ref: str = ""

    @classmethod
    def queried(cls, state: str, amount: int) -> PayoutView:
        """A record read from the gateway's query API (counts as paid once if SUCCEEDED)."""
        paid = state == SUCCEEDED
        return cls(state=state, amount=amount, paid_count=int(paid), paid_sum=amount if paid else 0)

    @property
    def times_paid(self) -> int:
        if self.paid_count:
            return self.paid_count
        return 1 if self.state == SUCCEEDED else 0


@dataclass(frozen=True)
class Finding:
    reason: Reason
    detail: str


def _amounts(items: Iterable[int]) -> str:
    return ",".join(str(a) for a in items)


def check_order(
    order: OrderView | None, entries: Sequence[EntryView], payouts: Sequence[PayoutView]
) -> list[Finding]:
    """Everything wrong with one order: the one definition of a clean order (no finding),
    used by the checker, the self-check, the daily batch and the drill's verdict; the daily
    batch's SQL pre-filter is held to it by tests/integration/test_recon_clean_order.py. An
    order that is not final yet has nothing wrong here (stuck orders are judged by age, see
    `is_stuck`). With `order` None the ledger or the gateway knows an order id the
    orchestrator never reported: an orphan.

    Precedence keeps one fault one finding: a FAILED order with money at the gateway is a
    state mismatch (or a payout without debit when nothing was debited), not also a missing
    refund; a SUCCEEDED order with no successful payout is a state mismatch."""
    debits = [e for e in entries if e.kind == DEBIT]
    refunds = [e for e in entries if e.kind == REFUND]
    if order is None:
        return _orphan_findings(debits, refunds, payouts)
    if not order.terminal:
        return []
    findings: list[Finding] = []
    if order.conflict_state:
        findings.append(Finding(Reason.STATE_MISMATCH,
                                f"order reported both {order.state} and {order.conflict_state}"))
    if len(debits) > 1:
        findings.append(_double_debit(debits))
    wrong_amounts = [f"debit {e.amount} fen" for e in debits if e.amount != order.amount]
    if order.state == SUCCEEDED:
        findings += _succeeded_findings(order, debits, refunds, payouts, wrong_amounts)
    else:
        findings += _failed_findings(order, debits, refunds, payouts, wrong_amounts)
    if wrong_amounts:
        findings.append(Finding(Reason.AMOUNT_MISMATCH,
                                f"order {order.amount} fen vs " + ", ".join(wrong_amounts)))
    return findings


def _in_flight(payouts: Sequence[PayoutView]) -> list[PayoutView]:
    return [p for p in payouts if p.state not in (SUCCEEDED, FAILED)]


def _orphan_findings(debits: list[EntryView], refunds: list[EntryView],
                     payouts: Sequence[PayoutView]) -> list[Finding]:
    """Money the ledger or the gateway holds for an order id the orchestrator never reported."""
    if debits:
        return [Finding(Reason.DEBIT_WITHOUT_ORDER,
                        f"{len(debits)} debit(s) of {_amounts(e.amount for e in debits)} fen "
                        "for an order the orchestrator never reported")]
    if sum(p.times_paid for p in payouts) or _in_flight(payouts):
        return [Finding(Reason.PAYOUT_WITHOUT_DEBIT,
                        f"gateway payout ({_payout_summary(payouts)}) for an order "
                        "the orchestrator never reported and the ledger never debited")]
    if refunds:
        return [Finding(Reason.DOUBLE_REFUND, f"{len(refunds)} refund(s) without any debit or order")]
    return []


def _succeeded_findings(order: OrderView, debits: list[EntryView], refunds: list[EntryView],
                        payouts: Sequence[PayoutView], wrong_amounts: list[str]) -> list[Finding]:
    """A SUCCEEDED order: one debit, no refund, paid exactly once its amount."""
    findings: list[Finding] = []
    times_paid = sum(p.times_paid for p in payouts)
    if not debits:
        findings.append(Finding(Reason.MISSING_DEBIT, "order SUCCEEDED but the ledger holds no debit"))
    if refunds:
        findings.append(Finding(Reason.REFUND_ON_SUCCEEDED, f"{len(refunds)} refund(s) on a SUCCEEDED order"))
    if times_paid > 1:
        findings.append(Finding(Reason.DOUBLE_PAYOUT,
                                f"gateway paid {times_paid} times ({_payout_summary(payouts)})"))
    elif times_paid == 0:
        findings.append(Finding(Reason.STATE_MISMATCH,
                                f"order SUCCEEDED, gateway has {_payout_summary(payouts)}"))
    for p in payouts:
        if p.times_paid and (p.paid_sum or p.amount) != p.times_paid * order.amount:
            wrong_amounts.append(f"payout {p.paid_sum or p.amount} fen")
    return findings


def _failed_findings(order: OrderView, debits: list[EntryView], refunds: list[EntryView],
                     payouts: Sequence[PayoutView], wrong_amounts: list[str]) -> list[Finding]:
    """A FAILED order: no money at the gateway, and its debit (if any) refunded exactly once."""
    findings: list[Finding] = []
    money_out = sum(p.times_paid for p in payouts) > 0 or bool(_in_flight(payouts))
    if money_out:
        if debits:
            findings.append(Finding(Reason.STATE_MISMATCH,
                                    f"order FAILED, gateway has {_payout_summary(payouts)}"))
        else:
            findings.append(Finding(Reason.PAYOUT_WITHOUT_DEBIT,
                                    f"order FAILED without debit, gateway has {_payout_summary(payouts)}"))
    if len(refunds) > len(debits):
        findings.append(_refunds_beyond_debits(debits, refunds))
    elif debits and not refunds and not money_out:
        findings.append(Finding(Reason.MISSING_REFUND, "order FAILED, its debit was never refunded"))
    wrong_amounts += [f"refund {e.amount} fen" for e in refunds if e.amount != order.amount]
    return findings



def ledger_findings(entries: Sequence[EntryView]) -> list[Finding]:
    """What is wrong with one order id's ledger entries whatever the order's state, so even
    where the order itself is unknown (the ledger's own invariants): more than one debit,
    more refunds than debits, a refund of another amount than the debit. An order with any
    of these also has a finding of `check_order` in either final state
    (tests/unit/test_recon_clean_order.py walks every small case)."""
    debits = [e for e in entries if e.kind == DEBIT]
    refunds = [e for e in entries if e.kind == REFUND]
    findings: list[Finding] = []
    if len(debits) > 1:
        findings.append(_double_debit(debits))
    if len(refunds) > len(debits):
        findings.append(_refunds_beyond_debits(debits, refunds))
    wrong = [f"refund {e.amount} fen" for e in refunds if debits and e.amount != debits[0].amount]
    if wrong:
        findings.append(Finding(Reason.AMOUNT_MISMATCH,
                                f"debit {debits[0].amount} fen vs " + ", ".join(wrong)))
    return findings


def _double_debit(debits: Sequence[EntryView]) -> Finding:
    return Finding(Reason.DOUBLE_DEBIT, f"{len(debits)} debits ({_amounts(e.amount for e in debits)} fen)")


def _refunds_beyond_debits(debits: Sequence[EntryView], refunds: Sequence[EntryView]) -> Finding:
    return Finding(Reason.DOUBLE_REFUND, f"{len(refunds)} refund(s) for {len(debits)} debit(s)")


def held_back(findings: Sequence[Finding], terminal_seen: datetime | None, now: datetime,
              refund_grace: timedelta) -> tuple[list[Finding], datetime | None]:
    """Split off a missing refund that may still be on its way. Every other class is
    decided by changes committed before the order's final transition; the refund is the one
    thing the orchestrator does after it (an outbox job, retried with backoff), so its
    absence only counts once the refund relay had `refund_grace` to deliver it. Returns the
    findings to report now and, when one is held back, when to look again."""
    if terminal_seen is None or now >= terminal_seen + refund_grace:
        return list(findings), None
    keep = [f for f in findings if f.reason is not Reason.MISSING_REFUND]
    if len(keep) == len(findings):
        return keep, None
    return keep, terminal_seen + refund_grace


def _payout_summary(payouts: Sequence[PayoutView]) -> str:
    if not payouts:
        return "no payout"
    return "; ".join(f"{p.state} {p.amount} fen" + (f" x{p.paid_count}" if p.paid_count > 1 else "")
                     for p in payouts)


def is_stuck(order: OrderView, created_at: datetime, now: datetime, stuck_after: timedelta) -> bool:
    return not order.terminal and now - created_at > stuck_after


def ledger_conservation(credits: int, debits: int, refunds: int, balance: int) -> str:
    """Empty when credits - debits + refunds equals the balance, else what is off."""
    expected = credits - debits + refunds
    if expected == balance:
        return ""
    return (f"credits {credits} - debits {debits} + refunds {refunds} = {expected} fen, "
            f"but the latest balance is {balance} fen (off by {balance - expected})")


# ---- parsing feed payloads (owned by the peers; read liberally, strictly typed after) ----

_PREFIXES = ("ORDER_STATE_", "PAYOUT_STATE_", "ENTRY_KIND_")


def norm_enum(value: Any) -> str:
    text = str(value or "").strip().upper()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _int(payload: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = payload.get(name)
        if value is not None and value != "":
            return int(value)
    return 0


def _str(payload: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = payload.get(name)
        if value is not None:
            return str(value)
    return ""


def parse_time(value: Any, default: datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return default
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=default.tzinfo)


@dataclass(frozen=True)
class OrderChange:
    order_id: str
    uid: int
    amount: int
    channel: str
    state: str
    failure_reason: str
    created_at: datetime
    changed_at: datetime

    @property
    def rank(self) -> int:
        return ORDER_RANK.get(self.state, -1)


@dataclass(frozen=True)
class EntryChange:
    entry_id: int
    uid: int
    kind: str
    amount: int
    order_id: str
    reward_id: str
    balance_after: int | None
    created_at: datetime


@dataclass(frozen=True)
class PayoutChange:
    cursor: str
    order_id: str
    payout_ref: str
    uid: int
    channel: str
    amount: int
    state: str
    failure_reason: str
    changed_at: datetime


def order_change(key: str, payload: Mapping[str, Any], at: datetime) -> OrderChange | None:
    order_id = _str(payload, "order_id") or key
    state = norm_enum(payload.get("state"))
    if not order_id or state not in ORDER_RANK:
        return None
    return OrderChange(
        order_id=order_id, uid=_int(payload, "uid"), amount=_int(payload, "amount_fen", "amount"),
        channel=_str(payload, "channel"), state=state, failure_reason=_str(payload, "failure_reason"),
        created_at=parse_time(payload.get("created_at"), at),
        changed_at=parse_time(payload.get("updated_at"), at),
    )


def entry_change(payload: Mapping[str, Any], at: datetime) -> EntryChange | None:
    entry_id = _int(payload, "entry_id", "id")
    kind = norm_enum(payload.get("kind"))
    if not entry_id or kind not in (CREDIT, DEBIT, REFUND, VOID):
        return None
    raw_balance = payload.get("balance_after_fen", payload.get("balance_after"))
    return EntryChange(
        entry_id=entry_id, uid=_int(payload, "uid"), kind=kind,
        amount=_int(payload, "amount_fen", "amount"), order_id=_str(payload, "order_id"),
        reward_id=_str(payload, "reward_id"),
        balance_after=None if raw_balance is None else int(raw_balance),
        created_at=parse_time(payload.get("created_at"), at),
    )


def payout_change(cursor: str, key: str, payload: Mapping[str, Any], at: datetime) -> PayoutChange | None:
    order_id = _str(payload, "order_id") or key
    state = norm_enum(payload.get("state"))
    if not order_id or not state:
        return None
    # The gateway keys payouts by order id; a distinct record for the same order (which is
    # how a double payout shows) carries its own id or creation time if the payload has one.
    ref = _str(payload, "payout_id", "payout_ref")
    return PayoutChange(
        cursor=cursor, order_id=order_id, payout_ref=ref, uid=_int(payload, "uid"),
        channel=_str(payload, "channel"), amount=_int(payload, "amount_fen", "amount"), state=state,
        failure_reason=_str(payload, "failure_reason"), changed_at=at,
    )


def latest_per_order(changes: Iterable[OrderChange]) -> list[tuple[OrderChange, str]]:
    """One change per order (the furthest along), with a conflicting terminal state if the
    same page reports two different ones."""
    best: dict[str, OrderChange] = {}
    conflict: dict[str, str] = {}
    for c in changes:
        prior = best.get(c.order_id)
        if prior is None or c.rank > prior.rank:
            best[c.order_id] = c
        elif c.rank == prior.rank == TERMINAL_RANK and c.state != prior.state:
            conflict[c.order_id] = c.state
    return [(c, conflict.get(oid, "")) for oid, c in best.items()]


# ---- requests ----

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# A day's bounds (and their conversion to UTC) must stay inside what datetime holds.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)
MAX_ORDER_ID_LEN = validate.MAX_ORDER_ID_LEN
MAX_NOTE_LEN = 1000


def parse_day(text: str) -> date:
    if not _DATE.fullmatch(text or ""):
        shown = f", got {text!r}" if len(text) <= 16 and text.isprintable() else ""
        raise InvalidArgument(f"date: must be YYYY-MM-DD{shown}", reason="BAD_DATE")
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgument(f"date: {text!r} is not a calendar day", reason="BAD_DATE") from exc
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidArgument(f"date: must be between {FIRST_DAY} and {LAST_DAY}", reason="BAD_DATE")
    return day


def day_bounds(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end


def validate_resolution(status: str, note: str) -> None:
    if status not in (Status.RESOLVED, Status.ACCEPTED):
        raise InvalidArgument("status: must be RESOLVED or ACCEPTED", reason="BAD_STATUS")
    if not note.strip():
        raise InvalidArgument("note: required to resolve a discrepancy", reason="NOTE_REQUIRED")
    validate.text("note", note, max_len=MAX_NOTE_LEN, multiline=True)


def validate_order_id(order_id: str, *, required: bool = True) -> None:
    validate.identifier("order_id", order_id, max_len=MAX_ORDER_ID_LEN, required=required)


def page_size(requested: int) -> int:
    return paging.OPERATOR_LIST.of(requested)


def validate_filters(status: str, reason: str, order_id: str, source: str) -> None:
    """ListDiscrepancies filters: each empty (any) or a value that can match."""
    if status:
        validate.one_of("status", status, [s.value for s in Status])
    if reason:
        validate.one_of("reason", reason, [r.value for r in Reason])
    validate_order_id(order_id, required=False)
    if source:
        validate.one_of("source", source, [s.value for s in Source])


def one_filter(field: str, named: str, typed: str) -> str:
    """A filter given by its deprecated string (`named`) and its enum field (`typed`, as its
    string): either, or both when they agree."""
    if named and typed and named != typed:
        raise validate.invalid(f"{field}_kind", f"{typed!r} contradicts {field} {named!r}", "BAD_FILTER")
    return typed or named


class DiscrepancyNotFound(NotFound):
    def __init__(self, discrepancy_id: int) -> None:
        super().__init__(f"discrepancy {discrepancy_id} not found", reason="DISCREPANCY_NOT_FOUND")


class ReportNotFound(NotFound):
    def __init__(self, day: date) -> None:
        super().__init__(f"no daily report for {day.isoformat()}; run RunDailyRecon first",
                         reason="REPORT_NOT_FOUND")


class DailyBatchBusy(DomainError):
    """Another run of the daily batch is under way (on this replica or another)."""

    code = Code.ABORTED

    def __init__(self) -> None:
        super().__init__("the daily reconciliation is already running (on this or another replica); "
                         "ask again when it has finished", reason="DAILY_BATCH_RUNNING")


class OrderNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} is unknown to the orchestrator, the ledger and the gateway",
                         reason="ORDER_NOT_FOUND")


# ---- discrepancies ----

@dataclass(frozen=True)
class NewDiscrepancy:
    """A finding to store. `subject` is what it is about: the order id, `uid:<n>` for an
    account that does not add up, or a totals name; one row per (reason, subject, source)."""

    reason: str
    subject: str
    order_id: str
    uid: int
    detail: str
    source: str

    @classmethod
    def of_order(cls, finding: Finding, order_id: str, uid: int, source: Source) -> NewDiscrepancy:
        return cls(finding.reason.value, order_id, order_id, uid, finding.detail, source.value)

    @classmethod
    def of_account(cls, uid: int, detail: str, source: Source) -> NewDiscrepancy:
        return cls(Reason.CONSERVATION.value, f"uid:{uid}", "", uid, detail, source.value)

    @classmethod
    def of_totals(cls, name: str, detail: str, source: Source) -> NewDiscrepancy:
        return cls(Reason.CONSERVATION.value, name, "", 0, detail, source.value)


@dataclass(frozen=True)
class Discrepancy:
    id: int
    reason: str
    subject: str
    order_id: str
    uid: int
    detail: str
    status: str
    source: str
    note: str
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "reason": self.reason, "subject": self.subject, "order_id": self.order_id,
            "uid": self.uid, "detail": self.detail, "status": self.status, "source": self.source,
            "note": self.note, "created_at": self.created_at.isoformat(),
        }
