"""The two rules that keep a peer's word from moving money (issue 13, item 4)."""

from __future__ import annotations

from account_svc.domain import refund_refusal
from meshkit.errors import Code
from withdraw_svc.domain import GatewayView, failure_refusal


def test_a_failure_is_confirmed_only_by_a_failed_or_missing_gateway_record() -> None:
    assert failure_refusal("wd-1", GatewayView.FAILED) is None
    assert failure_refusal("wd-1", GatewayView.NOT_FOUND) is None
    for view, says in ((GatewayView.SUCCEEDED, "paid it (SUCCEEDED)"),
                       (GatewayView.PROCESSING, "still processing it (PROCESSING)"),
                       (GatewayView.UNKNOWN, "does not know")):
        refusal = failure_refusal("wd-1", view)
        assert refusal is not None and refusal.code is Code.FAILED_PRECONDITION
        assert refusal.reason == "GATEWAY_DISAGREES" and says in refusal.message and "wd-1" in refusal.message


def test_only_a_failed_order_is_refunded() -> None:
    assert refund_refusal("wd-1", "FAILED") is None
    unknown = refund_refusal("wd-1", None)
    assert unknown is not None and unknown.reason == "ORDER_UNKNOWN"
    for state in ("PENDING_DEDUCT", "PENDING_PAYOUT", "PAYING", "SUCCEEDED"):
        refusal = refund_refusal("wd-1", state)
        assert refusal is not None and refusal.code is Code.FAILED_PRECONDITION
        assert refusal.reason == "ORDER_NOT_FAILED" and f"is {state} in withdraw_svc" in refusal.message
