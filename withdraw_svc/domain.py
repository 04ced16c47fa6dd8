"""Withdraw orders, the gate and the compensation rules: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaign.tokens import MAX_TOKEN_LEN
from meshkit import order_states, validate
from meshkit.errors import Code, Conflict, DomainError, FailedPrecondition, InvalidArgument

MAX_REQUEST_ID_LEN = 64
MAX_METHOD_ID_LEN = 128
MAX_ORDER_ID_LEN = validate.MAX_ORDER_ID_LEN
MAX_TOKENS = 200
MAX_REASON_LEN = 1000
MAX_BIND_PROMPT_LEN = 500
MAX_TIMEZONE_LEN = 64
# Ten years: beyond that no order is open, and PostgreSQL's interval arithmetic overflows.
MAX_MIN_AGE_S = 10 * 366 * 24 * 3600
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_BIND_PROMPT = "Bind a payout method now so you can withdraw as soon as withdrawals open."
MAX_RELEASE_MODULUS = 1_000_000
MAX_DRAIN_S = 86_400


class OrderState(StrEnum):
    """An order's lifecycle state (meshkit/order_states.py holds the table)."""

    PENDING_DEDUCT = order_states.PENDING_DEDUCT
    PENDING_PAYOUT = order_states.PENDING_PAYOUT
    PAYING = order_states.PAYING
    SUCCEEDED = order_states.SUCCEEDED
    FAILED = order_states.FAILED

    @property
    def terminal(self) -> bool:
        return self.value in order_states.TERMINAL


OPEN_STATES = tuple(OrderState(s) for s in order_states.OPEN)

# The database refuses every other transition (migrations/001_withdraw.sql, orders_guard);
# tests/integration/test_withdraw_state_machine.py walks every pair against both.
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState(s): frozenset(OrderState(t) for t in targets)
    for s, targets in order_states.TRANSITIONS.items()
}


def can_transition(current: OrderState, target: OrderState) -> bool:
    return target in TRANSITIONS[current]


def owes_refund(state: OrderState) -> bool:
    """Entering `state` owes the order's refund job (the trigger writes it in the same
    transaction; the compensation job settles any left open)."""
    return state.value in order_states.OWES_REFUND


class TransitionRefused(ValueError):
    """A compare-and-set asked for a move the state machine does not have: a bug in the
    caller, refused before the database is asked."""


def checked_sources(from_states: Sequence[OrderState], to_state: OrderState) -> list[str]:
    """The values of `from_states` for a compare-and-set to `to_state`, each one a move the
    state machine allows; TransitionRefused otherwise."""
    refused = [s for s in from_states if not can_transition(s, to_state)]
    if refused or not from_states:
        raise TransitionRefused(f"no transition {', '.join(refused) or '(none)'} -> {to_state}")
    return [s.value for s in from_states]


class FailureReason(StrEnum):
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    DEDUCT_REFUSED = "DEDUCT_REFUSED"
    DEDUCT_UNCONFIRMED = "DEDUCT_UNCONFIRMED"
    PAYOUT_FAILED = "PAYOUT_FAILED"
    PAYOUT_REJECTED = "PAYOUT_REJECTED"  # written by earlier compensation jobs, which paid themselves


class RefundState(StrEnum):
    NONE = ""
    PENDING = "PENDING"
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"


@dataclass(frozen=True)
class StateChange:
    from_state: OrderState | None
    to_state: OrderState
    reason: str
    at: datetime


@dataclass(frozen=True)
class Order:
    order_id: str
    uid: int
    request_id: str
    amount_fen: int
    channel: str
    method_id: str
    state: OrderState
    failure_reason: str
    created_at: datetime
    updated_at: datetime
    refund_state: RefundState = RefundState.NONE
    history: tuple[StateChange, ...] = field(default=())

    def with_history(self, history: tuple[StateChange, ...]) -> Order:
        return replace(self, history=history)


@dataclass(frozen=True)
class Limits:
    min_fen: int
    max_fen: int
    channels: tuple[str, ...]


@dataclass(frozen=True)
class ConfirmInput:
    uid: int
    request_id: str
    amount_fen: int
    method_id: str
    tokens: tuple[str, ...]


def validate_uid(uid: int) -> None:
    validate.positive("uid", uid, reason="BAD_UID")


# Items per BeginPayoutBatch/SettlePayoutBatch: one statement's arrays stay small.
MAX_PAYOUT_BATCH = 500


def validate_order_id(order_id: str) -> None:
    validate.identifier("order_id", order_id, max_len=MAX_ORDER_ID_LEN)


def validate_tokens(tokens: Sequence[str]) -> None:
    """Reward tokens are the ledger's to judge; here only their number and that each is
    one line of text, so nothing unreadable is forwarded."""
    validate.count("tokens", tokens, MAX_TOKENS, reason="BAD_TOKENS")
    for index, token in enumerate(tokens):
        validate.text(f"tokens[{index}]", token, max_len=MAX_TOKEN_LEN, reason="BAD_TOKENS")


def validate_confirm(req: ConfirmInput, limits: Limits) -> None:
    validate_uid(req.uid)
    validate.identifier("request_id", req.request_id, max_len=MAX_REQUEST_ID_LEN)
    if req.amount_fen < limits.min_fen:
        raise InvalidArgument(
            f"amount_fen must be at least {limits.min_fen} fen, got {req.amount_fen}", reason="BAD_AMOUNT"
        )
    if req.amount_fen > limits.max_fen:
        raise InvalidArgument(
            f"amount_fen must be at most {limits.max_fen} fen per order, got {req.amount_fen}",
            reason="BAD_AMOUNT",
        )
    validate.identifier("method_id", req.method_id, max_len=MAX_METHOD_ID_LEN)
    validate_tokens(req.tokens)
    if any(not t for t in req.tokens):
        raise InvalidArgument("tokens: must not contain empty strings", reason="BAD_TOKENS")


def check_replay(existing: Order, req: ConfirmInput) -> None:
    """A request_id is bound to its first content (AIP-155); a different content is a conflict."""
    if existing.amount_fen != req.amount_fen:
        raise Conflict(
            f"request_id {req.request_id!r} was used for amount_fen {existing.amount_fen}, "
            f"not {req.amount_fen}; use a new request_id",
            reason="REQUEST_ID_REUSED",
        )
    if existing.method_id != req.method_id:
        raise Conflict(
            f"request_id {req.request_id!r} was used for another method_id; use a new request_id",
            reason="REQUEST_ID_REUSED",
        )


def insufficient_balance(detail: str = "") -> FailedPrecondition:
    message = "insufficient balance for amount_fen"
    return FailedPrecondition(f"{message}: {detail}" if detail else message, reason="INSUFFICIENT_BALANCE")


def check_method(method_channel: str | None, method_id: str, uid: int, limits: Limits) -> str:
    """The channel of a method bound to uid, or the refusal."""
    if method_channel is None:
        raise FailedPrecondition(
            f"method_id {method_id!r} is not bound to uid {uid}; bind it first", reason="METHOD_NOT_BOUND"
        )
    if method_channel not in limits.channels:
        raise FailedPrecondition(
            f"method_id {method_id!r} pays through channel {method_channel!r}, which is not enabled "
            f"(enabled: {', '.join(limits.channels)})",
            reason="CHANNEL_NOT_ENABLED",
        )
    return method_channel


# ---------------------------------------------------------------------------------------
# Gate

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class GateConfig:
    timezone: str = DEFAULT_TIMEZONE
    closed_start: str = ""
    closed_end: str = ""
    release_modulus: int = 1
    release_k: int = 1
    bind_prompt: str = DEFAULT_BIND_PROMPT
    auto_release: bool = False
    auto_release_drain_seconds: int = 0
    auto_release_step: int = 1
    version: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "timezone": self.timezone, "closed_start": self.closed_start, "closed_end": self.closed_end,
            "release_modulus": self.release_modulus, "release_k": self.release_k,
            "bind_prompt": self.bind_prompt, "auto_release": self.auto_release,
            "auto_release_drain_seconds": self.auto_release_drain_seconds,
            "auto_release_step": self.auto_release_step,
        }

    @classmethod
    def from_json(cls, data: dict[str, object], version: int) -> GateConfig:
        return cls(
            timezone=str(data.get("timezone") or DEFAULT_TIMEZONE),
            closed_start=str(data.get("closed_start") or ""),
            closed_end=str(data.get("closed_end") or ""),
            release_modulus=int(str(data.get("release_modulus", 1))),
            release_k=int(str(data.get("release_k", 1))),
            bind_prompt=str(data.get("bind_prompt") or DEFAULT_BIND_PROMPT),
            auto_release=data.get("auto_release") is True,
            auto_release_drain_seconds=int(str(data.get("auto_release_drain_seconds", 0))),
            auto_release_step=int(str(data.get("auto_release_step", 1))),
            version=version,
        )


# The fields SetGate's update_mask may name (AIP-134); version is output only.
GATE_FIELDS = tuple(f.name for f in fields(GateConfig) if f.name != "version")


def gate_mask(paths: Sequence[str]) -> tuple[str, ...]:
    """The fields an update_mask names, "*" expanded, or InvalidArgument. An empty mask is
    refused: with replace-by-default semantics a field left out of the request silently
    fell back to its default, which is how a window or a cohort got lost."""
    if not paths:
        raise InvalidArgument(
            'update_mask is required; use "*" to replace the whole configuration', reason="BAD_UPDATE_MASK"
        )
    if "*" in paths:
        if len(paths) > 1:
            raise InvalidArgument('update_mask: "*" must be the only path', reason="BAD_UPDATE_MASK")
        return GATE_FIELDS
    unknown = [p for p in paths if p not in GATE_FIELDS]
    if unknown:
        raise InvalidArgument(
            f"update_mask: unknown path {unknown[0]!r} (known: {', '.join(GATE_FIELDS)}, or \"*\")",
            reason="BAD_UPDATE_MASK",
        )
    return tuple(dict.fromkeys(paths))


def apply_gate_mask(current: GateConfig, patch: GateConfig, fields: Sequence[str]) -> GateConfig:
    """`current` with the named fields taken from `patch` (not validated yet)."""
    return replace(current, **{name: getattr(patch, name) for name in fields})


def _parse_hhmm(value: str, name: str) -> time:
    match = _HHMM.fullmatch(value)
    if not match:
        raise InvalidArgument(f"{name} must be HH:MM (00:00..23:59), got {value!r}", reason="BAD_GATE")
    return time(int(match.group(1)), int(match.group(2)))


def validate_gate(config: GateConfig) -> GateConfig:
    """The config as it will be stored (defaults filled in), or InvalidArgument."""
    validate.identifier("timezone", config.timezone, max_len=MAX_TIMEZONE_LEN, required=False,
                        reason="BAD_GATE")
    validate.text("bind_prompt", config.bind_prompt, max_len=MAX_BIND_PROMPT_LEN, multiline=True,
                  reason="BAD_GATE")
    tz_name = config.timezone or DEFAULT_TIMEZONE
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument(f"timezone {tz_name!r} is not a known time zone", reason="BAD_GATE") from exc
    validate.identifier("closed_start", config.closed_start, max_len=5, required=False, reason="BAD_GATE")
    validate.identifier("closed_end", config.closed_end, max_len=5, required=False, reason="BAD_GATE")
    if bool(config.closed_start) != bool(config.closed_end):
        raise InvalidArgument(
            "closed_start and closed_end must both be set (a window) or both be empty (no window)",
            reason="BAD_GATE",
        )
    if config.closed_start:
        start = _parse_hhmm(config.closed_start, "closed_start")
        end = _parse_hhmm(config.closed_end, "closed_end")
        if start == end:
            raise InvalidArgument("closed_end must differ from closed_start", reason="BAD_GATE")
    if not 1 <= config.release_modulus <= MAX_RELEASE_MODULUS:
        raise InvalidArgument(
            f"release_modulus must be between 1 and {MAX_RELEASE_MODULUS}, got {config.release_modulus}",
            reason="BAD_GATE",
        )
    if not 0 <= config.release_k <= config.release_modulus:
        raise InvalidArgument(
            f"release_k must be between 0 and release_modulus ({config.release_modulus}), "
            f"got {config.release_k}",
            reason="BAD_GATE",
        )
    step = config.auto_release_step or 1
    if not 1 <= step <= MAX_RELEASE_MODULUS:
        raise InvalidArgument(
            f"auto_release_step must be between 1 and {MAX_RELEASE_MODULUS} (0 means 1), "
            f"got {config.auto_release_step}",
            reason="BAD_GATE",
        )
    if not 0 <= config.auto_release_drain_seconds <= MAX_DRAIN_S:
        raise InvalidArgument(
            f"auto_release_drain_seconds must be between 0 and {MAX_DRAIN_S}, "
            f"got {config.auto_release_drain_seconds}",
            reason="BAD_GATE",
        )
    if config.auto_release and config.auto_release_drain_seconds < 1:
        raise InvalidArgument(
            "auto_release_drain_seconds must be at least 1 when auto_release is on: it is the time "
            "within which every channel's backlog must drain before the next cohort is released",
            reason="BAD_GATE",
        )
    return replace(config, timezone=tz_name, bind_prompt=config.bind_prompt or DEFAULT_BIND_PROMPT,
                   auto_release_step=step)


@dataclass(frozen=True)
class GateDecision:
    open: bool
    reason: str  # OPEN, CLOSED_WINDOW, NOT_RELEASED
    message: str
    open_time: datetime | None = None


def window_end_if_closed(config: GateConfig, now: datetime) -> datetime | None:
    """When the closed window that contains `now` ends, or None when `now` is outside it.
    The window is [start, end) in local time and crosses midnight when end < start."""
    if not config.closed_start:
        return None
    tz = ZoneInfo(config.timezone)
    local = now.astimezone(tz)
    start = _parse_hhmm(config.closed_start, "closed_start")
    end = _parse_hhmm(config.closed_end, "closed_end")
    t = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if start <= t < end:
            return datetime.combine(today, end, tzinfo=tz)
        return None
    # Crosses midnight: closed from start to 24:00 and from 00:00 to end.
    if t >= start:
        return datetime.combine(today + timedelta(days=1), end, tzinfo=tz)
    if t < end:
        return datetime.combine(today, end, tzinfo=tz)
    return None


def released(config: GateConfig, uid: int) -> bool:
    return uid % config.release_modulus < config.release_k


def evaluate_gate(config: GateConfig, uid: int, now: datetime) -> GateDecision:
    reopen = window_end_if_closed(config, now)
    if reopen is not None:
        return GateDecision(
            open=False, reason="CLOSED_WINDOW", open_time=reopen,
            message=(
                f"Withdrawals are closed until {reopen:%H:%M} ({config.timezone}, "
                f"{reopen.isoformat(timespec='minutes')}). {config.bind_prompt}"
            ),
        )
    if not released(config, uid):
        return GateDecision(
            open=False, reason="NOT_RELEASED",
            message=(
                "Withdrawals are opening in batches and this account is not in a released batch yet; "
                "please try again a little later."
            ),
        )
    return GateDecision(open=True, reason="OPEN", message="")


def gate_refusal(decision: GateDecision) -> FailedPrecondition:
    return FailedPrecondition(f"gate: {decision.message}", reason=f"GATE_{decision.reason}")


def version_mismatch(expected: int, actual: int) -> DomainError:
    return DomainError(
        f"expected_version {expected} does not match the current version {actual}; reread and retry",
        reason="GATE_VERSION_MISMATCH", code=Code.ABORTED,
    )


# ---------------------------------------------------------------------------------------
# Automatic release: cohorts tied to the channels' headroom


@dataclass(frozen=True)
class ChannelLoad:
    """One payout channel as payout_svc reports it."""

    channel: str
    backlog: int            # entries queued or delivered and not yet acknowledged
    rate_per_second: float  # configured limit; 0 when paused (or unlimited)
    unlimited: bool = False


class ChannelLoads(Protocol):
    """Where the backlog and rate of every channel come from (payout_svc's admin RPC)."""

    async def channel_loads(self) -> list[ChannelLoad]: ...


@dataclass(frozen=True)
class ReleaseStep:
    advance: bool
    release_k: int  # k after the step (unchanged on hold)
    reason: str


def drain_seconds(load: ChannelLoad) -> float | None:
    """How long the channel's backlog takes at its rate; None when it never drains."""
    if load.unlimited or load.backlog <= 0:
        return 0.0
    if load.rate_per_second <= 0:
        return None  # paused with a backlog
    return load.backlog / load.rate_per_second


def _describe(load: ChannelLoad) -> str:
    if load.unlimited:
        return f"{load.channel} unlimited (backlog {load.backlog})"
    drain = drain_seconds(load)
    if load.rate_per_second <= 0:
        return f"{load.channel} paused (backlog {load.backlog})"
    assert drain is not None
    return f"{load.channel} backlog {load.backlog} at {load.rate_per_second:g}/s = {drain:.1f}s"


def release_hold(config: GateConfig, now: datetime) -> ReleaseStep | None:
    """The hold that needs no channel figures, or None when they decide. While the window
    is closed nobody withdraws, so every backlog is empty: judging headroom then would
    release every cohort before the window opens and let them all in at once."""
    k, modulus = config.release_k, config.release_modulus
    if not config.auto_release:
        return ReleaseStep(False, k, "auto_release is off")
    if k >= modulus:
        return ReleaseStep(False, k, f"every cohort is released (k = {k} = M)")
    reopen = window_end_if_closed(config, now)
    if reopen is not None:
        return ReleaseStep(False, k, f"hold at k {k}/{modulus}: the window is closed until "
                                     f"{reopen.isoformat(timespec='minutes')}")
    return None


def decide_release(config: GateConfig, loads: Sequence[ChannelLoad], now: datetime) -> ReleaseStep:
    """Advance release_k by one step while every channel's backlog drains within
    auto_release_drain_seconds at its rate; hold otherwise (or while the window is
    closed); stop at release_modulus."""
    held = release_hold(config, now)
    if held is not None:
        return held
    k, modulus = config.release_k, config.release_modulus
    if not loads:
        return ReleaseStep(False, k, "no channel reported: holding rather than releasing blind")
    limit = config.auto_release_drain_seconds
    over = [load for load in loads if (d := drain_seconds(load)) is None or d > limit]
    numbers = "; ".join(_describe(load) for load in loads)
    if over:
        names = ", ".join(load.channel for load in over)
        return ReleaseStep(False, k, f"hold at k {k}/{modulus}: {names} would not drain within {limit}s "
                                     f"({numbers})")
    new_k = min(modulus, k + max(1, config.auto_release_step))
    return ReleaseStep(True, new_k, f"auto-release k {k} -> {new_k} of {modulus}: every channel drains "
                                    f"within {limit}s ({numbers})")


# ---------------------------------------------------------------------------------------
# Compensation


class Action(StrEnum):
    """What the job does with an order. It never pays: payout_svc's workers are the one
    path to the gateway's Payout, under the channel's rate limit, so the job hands an
    unpaid order back to them by re-opening its PAYOUT outbox job."""

    FAIL = "fail"                        # no debit (yet): FAILED, the refund job voids the order id
    FAIL_AND_REFUND = "fail_and_refund"  # debit exists: FAILED, the refund job returns it
    REQUEUE_PAYOUT = "requeue_payout"    # PENDING_PAYOUT: its payout job goes to the stream again
    ADOPT_SUCCEEDED = "adopt_succeeded"
    ADOPT_FAILED = "adopt_failed"
    # PAYING but the gateway has no record: the job goes to the stream again; the worker
    # meets a PAYING order, queries the gateway first and pays only on NOT_FOUND.
    REQUEUE_UNPAID = "requeue_unpaid"
    REFUND = "refund"                    # FAILED, refund not confirmed
    WAIT = "wait"                        # nothing safe to do now


class GatewayView(StrEnum):
    """What the gateway says about an order's payout."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PROCESSING = "PROCESSING"
    NOT_FOUND = "NOT_FOUND"
    UNKNOWN = "UNKNOWN"  # the gateway did not answer


def failure_refusal(order_id: str, view: GatewayView) -> FailedPrecondition | None:
    """Why a FAILED settlement of `order_id` is refused given what the gateway says of it,
    or None when the gateway agrees (FAILED) or has no record: a refund follows a FAILED
    order, so a payout that may have reached the user must never be declared failed."""
    if view in (GatewayView.FAILED, GatewayView.NOT_FOUND):
        return None
    says = {
        GatewayView.SUCCEEDED: "paid it (SUCCEEDED)",
        GatewayView.PROCESSING: "is still processing it (PROCESSING)",
    }.get(view, "answered a state withdraw_svc does not know")
    return FailedPrecondition(
        f"order {order_id} cannot be settled FAILED: the gateway {says}", reason="GATEWAY_DISAGREES",
    )


@dataclass(frozen=True)
class Facts:
    debit_exists: bool | None = None  # None: the ledger did not answer
    gateway: GatewayView | None = None
    refund_done: bool | None = None


def compensation_min_age(requested_s: int, override: bool, default_s: int) -> int:
    """The age threshold of a RunCompensation: the configured one unless given (or 0 given
    with override)."""
    validate.in_range("min_age_seconds", requested_s, 0, MAX_MIN_AGE_S, reason="BAD_MIN_AGE")
    return requested_s if override or requested_s else default_s


def decide(state: OrderState, facts: Facts) -> Action:
    """The compensation job's decision table. Only definitive facts move an order."""
    if state is OrderState.PENDING_DEDUCT:
        # Either way the order fails; the refund job refunds a debit or voids the order id so
        # a Deduct still in flight can never land. The label only says which one we expect.
        return Action.FAIL_AND_REFUND if facts.debit_exists is not False else Action.FAIL
    if state is OrderState.PENDING_PAYOUT:
        return Action.REQUEUE_PAYOUT
    if state is OrderState.PAYING:
        return {
            GatewayView.SUCCEEDED: Action.ADOPT_SUCCEEDED,
            GatewayView.FAILED: Action.ADOPT_FAILED,
            GatewayView.NOT_FOUND: Action.REQUEUE_UNPAID,
        }.get(facts.gateway or GatewayView.UNKNOWN, Action.WAIT)
    if owes_refund(state) and facts.refund_done is False:
        return Action.REFUND
    return Action.WAIT


def adopt_payout(view: GatewayView) -> OrderState | None:
    """The state a PAYING order takes from the gateway's answer to Payout/QueryPayout."""
    if view is GatewayView.SUCCEEDED:
        return OrderState.SUCCEEDED
    if view is GatewayView.FAILED:
        return OrderState.FAILED
    return None
