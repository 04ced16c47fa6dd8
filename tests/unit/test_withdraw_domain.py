"""withdraw_svc domain rules: state machine, confirm validation, gate, compensation table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from meshkit.errors import Code, DomainError
from withdraw_svc.domain import (
    TRANSITIONS,
    Action,
    ConfirmInput,
    Facts,
    GateConfig,
    GatewayView,
    Limits,
    Order,
    OrderState,
    adopt_payout,
    can_transition,
    check_method,
    check_replay,
    decide,
    evaluate_gate,
    validate_confirm,
    validate_gate,
    window_end_if_closed,
)
from withdraw_svc.order_queries import decode_page_token, encode_page_token

SH = ZoneInfo("Asia/Shanghai")
LIMITS = Limits(min_fen=100, max_fen=2_000_000, channels=("bank", "alipay", "balance"))
OK = ConfirmInput(uid=7, request_id="r-1", amount_fen=100, method_id="m-1", tokens=())
CAMPAIGN = GateConfig(closed_start="19:00", closed_end="01:00", release_modulus=10, release_k=3)


def sh(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=SH)


def order(state: OrderState = OrderState.PENDING_PAYOUT) -> Order:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return Order("wd-1", 7, "r-1", 100, "bank", "m-1", state, "", now, now)


# -- state machine ------------------------------------------------------------------------


def test_terminal_states_have_no_way_out() -> None:
    for state in OrderState:
        assert (not TRANSITIONS[state]) == state.terminal


@pytest.mark.parametrize(("a", "b", "ok"), [
    (OrderState.PENDING_DEDUCT, OrderState.PENDING_PAYOUT, True),
    (OrderState.PENDING_DEDUCT, OrderState.FAILED, True),
    (OrderState.PENDING_DEDUCT, OrderState.PAYING, False),
    (OrderState.PENDING_PAYOUT, OrderState.PAYING, True),
    (OrderState.PENDING_PAYOUT, OrderState.SUCCEEDED, False),
    (OrderState.PAYING, OrderState.SUCCEEDED, True),
    (OrderState.PAYING, OrderState.FAILED, True),
    (OrderState.PAYING, OrderState.PENDING_PAYOUT, False),
    (OrderState.SUCCEEDED, OrderState.FAILED, False),
    (OrderState.FAILED, OrderState.SUCCEEDED, False),
])
def test_transitions(a: OrderState, b: OrderState, ok: bool) -> None:
    assert can_transition(a, b) is ok


# -- confirm validation -------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"uid": 0}, "uid"),
    ({"uid": -3}, "uid"),
    ({"request_id": ""}, "request_id"),
    ({"request_id": "x" * 65}, "request_id"),
    ({"amount_fen": 99}, "amount_fen"),
    ({"amount_fen": 0}, "amount_fen"),
    ({"amount_fen": -100}, "amount_fen"),
    ({"amount_fen": 2_000_001}, "amount_fen"),
    ({"method_id": ""}, "method_id"),
    ({"tokens": ("",)}, "tokens"),
])
def test_validation_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(DomainError) as err:
        validate_confirm(replace(OK, **change), LIMITS)  # type: ignore[arg-type]
    assert err.value.code is Code.INVALID_ARGUMENT
    assert field in err.value.message


def test_validation_accepts_the_bounds() -> None:
    validate_confirm(OK, LIMITS)
    validate_confirm(replace(OK, amount_fen=2_000_000, request_id="x" * 64), LIMITS)


def test_replay_with_other_content_is_a_conflict() -> None:
    check_replay(order(), OK)
    for change in ({"amount_fen": 200}, {"method_id": "m-2"}):
        with pytest.raises(DomainError) as err:
            check_replay(order(), replace(OK, **change))  # type: ignore[arg-type]
        assert err.value.code is Code.ALREADY_EXISTS


def test_method_must_be_bound_and_on_an_enabled_channel() -> None:
    assert check_method("alipay", "m-1", 7, LIMITS) == "alipay"
    with pytest.raises(DomainError) as err:
        check_method(None, "m-1", 7, LIMITS)
    assert err.value.code is Code.FAILED_PRECONDITION and "method_id" in err.value.message
    with pytest.raises(DomainError) as err:
        check_method("wechat", "m-1", 7, LIMITS)
    assert err.value.code is Code.FAILED_PRECONDITION and "wechat" in err.value.message


# -- gate ------------------------------------------------------------------------------------


def test_no_window_and_everybody_released_is_open() -> None:
    decision = evaluate_gate(GateConfig(), 12345, datetime.now(UTC))
    assert decision.open and decision.reason == "OPEN"


@pytest.mark.parametrize(("now", "reopen"), [
    (sh(2025, 1, 28, 19, 0), sh(2025, 1, 29, 1, 0)),   # closes at 19:00 sharp
    (sh(2025, 1, 28, 23, 59), sh(2025, 1, 29, 1, 0)),
    (sh(2025, 1, 29, 0, 30), sh(2025, 1, 29, 1, 0)),   # after midnight, same window
    (sh(2025, 1, 29, 0, 59, 59), sh(2025, 1, 29, 1, 0)),
])
def test_window_across_midnight_is_closed_until_its_end(now: datetime, reopen: datetime) -> None:
    assert window_end_if_closed(CAMPAIGN, now) == reopen
    decision = evaluate_gate(CAMPAIGN, 1, now.astimezone(UTC))
    assert not decision.open and decision.reason == "CLOSED_WINDOW"
    assert decision.open_time == reopen
    assert "01:00" in decision.message and "Asia/Shanghai" in decision.message
    assert "Bind a payout method" in decision.message


@pytest.mark.parametrize("now", [sh(2025, 1, 29, 1, 0), sh(2025, 1, 28, 18, 59), sh(2025, 1, 28, 12, 0)])
def test_outside_the_window_the_cohort_decides(now: datetime) -> None:
    assert window_end_if_closed(CAMPAIGN, now) is None
    for uid in range(1, 40):
        decision = evaluate_gate(CAMPAIGN, uid, now)
        assert decision.open is (uid % 10 < 3)
        if not decision.open:
            assert decision.reason == "NOT_RELEASED" and decision.open_time is None


def test_same_day_window() -> None:
    config = GateConfig(closed_start="09:30", closed_end="10:15")
    assert window_end_if_closed(config, sh(2025, 3, 1, 9, 29)) is None
    assert window_end_if_closed(config, sh(2025, 3, 1, 9, 30)) == sh(2025, 3, 1, 10, 15)
    assert window_end_if_closed(config, sh(2025, 3, 1, 10, 15)) is None


def test_window_is_in_its_own_time_zone() -> None:
    config = GateConfig(timezone="UTC", closed_start="12:00", closed_end="13:00")
    # 20:30 in Shanghai is 12:30 UTC.
    assert window_end_if_closed(config, sh(2025, 3, 1, 20, 30)) == datetime(2025, 3, 1, 13, 0, tzinfo=UTC)


def test_k_zero_releases_nobody_and_k_m_everybody() -> None:
    now = sh(2025, 1, 29, 12, 0)
    assert not any(evaluate_gate(replace(CAMPAIGN, release_k=0), u, now).open for u in range(1, 50))
    assert all(evaluate_gate(replace(CAMPAIGN, release_k=10), u, now).open for u in range(1, 50))


@pytest.mark.parametrize(("change", "field"), [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"closed_start": "25:00"}, "closed_start"),
    ({"closed_end": "1:00"}, "closed_end"),
    ({"closed_end": ""}, "closed_end"),
    ({"closed_end": "19:00"}, "closed_end"),
    ({"release_modulus": 0}, "release_modulus"),
    ({"release_k": 11}, "release_k"),
    ({"release_k": -1}, "release_k"),
])
def test_gate_validation(change: dict[str, object], field: str) -> None:
    with pytest.raises(DomainError) as err:
        validate_gate(replace(CAMPAIGN, **change))  # type: ignore[arg-type]
    assert err.value.code is Code.INVALID_ARGUMENT
    assert field in err.value.message


def test_gate_validation_fills_defaults() -> None:
    valid = validate_gate(replace(CAMPAIGN, timezone="", bind_prompt=""))
    assert valid.timezone == "Asia/Shanghai" and valid.bind_prompt


# -- compensation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "facts", "action"), [
    (OrderState.PENDING_DEDUCT, Facts(debit_exists=False), Action.FAIL),
    (OrderState.PENDING_DEDUCT, Facts(debit_exists=True), Action.FAIL_AND_REFUND),
    (OrderState.PENDING_DEDUCT, Facts(debit_exists=None), Action.FAIL_AND_REFUND),
    (OrderState.PENDING_PAYOUT, Facts(), Action.REQUEUE_PAYOUT),
    (OrderState.PAYING, Facts(gateway=GatewayView.SUCCEEDED), Action.ADOPT_SUCCEEDED),
    (OrderState.PAYING, Facts(gateway=GatewayView.FAILED), Action.ADOPT_FAILED),
    (OrderState.PAYING, Facts(gateway=GatewayView.NOT_FOUND), Action.REQUEUE_UNPAID),
    (OrderState.PAYING, Facts(gateway=GatewayView.PROCESSING), Action.WAIT),
    (OrderState.PAYING, Facts(gateway=GatewayView.UNKNOWN), Action.WAIT),
    (OrderState.PAYING, Facts(), Action.WAIT),
    (OrderState.FAILED, Facts(refund_done=False), Action.REFUND),
    (OrderState.FAILED, Facts(refund_done=True), Action.WAIT),
    (OrderState.SUCCEEDED, Facts(), Action.WAIT),
])
def test_compensation_decisions(state: OrderState, facts: Facts, action: Action) -> None:
    assert decide(state, facts) is action


def test_only_final_gateway_answers_are_adopted() -> None:
    assert adopt_payout(GatewayView.SUCCEEDED) is OrderState.SUCCEEDED
    assert adopt_payout(GatewayView.FAILED) is OrderState.FAILED
    for view in (GatewayView.PROCESSING, GatewayView.NOT_FOUND, GatewayView.UNKNOWN):
        assert adopt_payout(view) is None


# -- paging -----------------------------------------------------------------------------------


def test_page_token_round_trip() -> None:
    o = replace(order(), created_at=datetime(2025, 1, 28, 12, 0, 0, 123456, tzinfo=UTC))
    at, order_id = decode_page_token(encode_page_token(o))
    assert at == o.created_at and order_id == o.order_id
    with pytest.raises(DomainError) as err:
        decode_page_token("not-a-token")
    assert err.value.code is Code.INVALID_ARGUMENT and "page_token" in err.value.message
