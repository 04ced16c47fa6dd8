"""The reconciliation rules as pure functions: one fault, one finding."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from meshkit.errors import InvalidArgument
from recon_svc.domain import (
    EntryView,
    OrderView,
    PayoutView,
    check_order,
    day_bounds,
    entry_change,
    held_back,
    is_stuck,
    latest_per_order,
    ledger_conservation,
    order_change,
    page_size,
    parse_day,
    payout_change,
    validate_resolution,
)
from tests.recon_cases import (
    AMT,
    CLEAN,
    ONE_FAULT,
    debit,
    order,
    paid,
    refund,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def reasons(o: OrderView | None, entries: list[EntryView], payouts: list[PayoutView]) -> list[str]:
    return [f.reason.value for f in check_order(o, entries, payouts)]


# ---- what is clean ----

@pytest.mark.parametrize(("o", "entries", "payouts"), CLEAN)
def test_clean_orders_have_no_finding(o: OrderView | None, entries: list[EntryView],
                                      payouts: list[PayoutView]) -> None:
    assert reasons(o, entries, payouts) == []


# ---- one fault, exactly one finding ----

@pytest.mark.parametrize(("o", "entries", "payouts", "expected"), ONE_FAULT)
def test_each_fault_is_one_finding(o: OrderView | None, entries: list[EntryView],
                                   payouts: list[PayoutView], expected: str) -> None:
    assert reasons(o, entries, payouts) == [expected]


def test_findings_name_the_amounts() -> None:
    [finding] = check_order(order("SUCCEEDED"), [debit(), debit()], [paid()])
    assert "2 debits" in finding.detail and "500" in finding.detail


def test_several_faults_are_all_reported() -> None:
    found = reasons(order("SUCCEEDED"), [debit(), debit(), refund()], [paid(times=2)])
    assert sorted(found) == ["double_debit", "double_payout", "refund_on_succeeded"]


def test_queried_payout_counts_as_paid_once() -> None:
    assert PayoutView.queried("SUCCEEDED", AMT).times_paid == 1
    assert PayoutView.queried("FAILED", AMT).times_paid == 0
    assert reasons(order("SUCCEEDED"), [debit()], [PayoutView.queried("SUCCEEDED", AMT)]) == []


def test_a_missing_refund_waits_for_the_refund_relay_other_findings_do_not() -> None:
    failed_at = NOW - timedelta(seconds=5)
    grace = timedelta(seconds=30)
    findings = check_order(order("FAILED"), [debit(), debit()], [])
    assert sorted(f.reason.value for f in findings) == ["double_debit", "missing_refund"]
    now_report, again = held_back(findings, failed_at, NOW, grace)
    assert [f.reason.value for f in now_report] == ["double_debit"] and again == failed_at + grace
    later_report, again = held_back(findings, failed_at, failed_at + grace, grace)
    assert len(later_report) == 2 and again is None
    clean, again = held_back([], failed_at, NOW, grace)
    assert clean == [] and again is None


def test_stuck_only_when_not_final_and_old() -> None:
    old = NOW - timedelta(hours=6)
    assert is_stuck(order("PAYING"), old, NOW, timedelta(hours=5))
    assert not is_stuck(order("PAYING"), NOW - timedelta(hours=1), NOW, timedelta(hours=5))
    assert not is_stuck(order("SUCCEEDED"), old, NOW, timedelta(hours=5))


def test_ledger_conservation() -> None:
    assert ledger_conservation(1000, 300, 100, 800) == ""
    detail = ledger_conservation(1000, 300, 100, 1300)
    assert "off by 500" in detail


# ---- reading the peers' feed payloads ----

def test_order_change_reads_the_withdraw_payload() -> None:
    c = order_change("o-9", {
        "order_id": "o-9", "uid": 3, "amount_fen": 700, "channel": "bank", "state": "SUCCEEDED",
        "from_state": "PAYING", "failure_reason": "", "created_at": "2026-11-25T10:00:00.5+00:00",
        "updated_at": "2026-11-25T10:00:02+00:00"}, NOW)
    assert c is not None
    assert (c.order_id, c.uid, c.amount, c.state, c.rank) == ("o-9", 3, 700, "SUCCEEDED", 3)
    assert c.created_at == datetime(2026, 11, 25, 10, 0, 0, 500000, tzinfo=UTC)
    assert order_change("o-9", {"state": "ORDER_STATE_PAYING"}, NOW).state == "PAYING"  # type: ignore[union-attr]
    assert order_change("o-9", {"state": "NONSENSE"}, NOW) is None


def test_entry_change_reads_void_without_account() -> None:
    e = entry_change({"entry_id": 5, "uid": None, "kind": "VOID", "amount_fen": 0, "order_id": "o-1",
                      "balance_after_fen": None}, NOW)
    assert e is not None and e.uid == 0 and e.balance_after is None and e.created_at == NOW
    assert entry_change({"kind": "DEBIT"}, NOW) is None  # no entry id: cannot be deduplicated


def test_payout_change_uses_key_when_payload_lacks_order() -> None:
    p = payout_change("1:2", "o-5", {"state": "PAYOUT_STATE_SUCCEEDED", "amount_fen": 9}, NOW)
    assert p is not None and (p.order_id, p.state, p.amount, p.payout_ref) == ("o-5", "SUCCEEDED", 9, "")


def test_latest_per_order_keeps_the_furthest_state_and_flags_two_terminal_states() -> None:
    def oc(oid: str, state: str) -> object:
        return order_change(oid, {"state": state, "amount_fen": 1}, NOW)

    changes = [oc("a", "PENDING_DEDUCT"), oc("a", "PAYING"), oc("a", "PENDING_PAYOUT"),
               oc("b", "SUCCEEDED"), oc("b", "FAILED")]
    got = {c.order_id: (c.state, conflict) for c, conflict in latest_per_order(changes)}  # type: ignore[arg-type]
    assert got == {"a": ("PAYING", ""), "b": ("SUCCEEDED", "FAILED")}


# ---- requests ----

def test_parse_day_and_bounds_in_the_recon_time_zone() -> None:
    start, end = day_bounds(parse_day("2026-02-01"), ZoneInfo("Asia/Shanghai"))
    assert start.astimezone(UTC) == datetime(2026, 1, 31, 16, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)
    assert parse_day("2026-02-28") == date(2026, 2, 28)
    for bad in ("", "2026-2-1", "2026-02-30", "yesterday"):
        with pytest.raises(InvalidArgument):
            parse_day(bad)


def test_resolution_needs_a_final_status_and_a_note() -> None:
    validate_resolution("RESOLVED", "fixed by hand")
    with pytest.raises(InvalidArgument):
        validate_resolution("OPEN", "x")
    with pytest.raises(InvalidArgument):
        validate_resolution("ACCEPTED", "   ")


def test_page_size() -> None:
    assert page_size(0) == 100 and page_size(5000) == 1000 and page_size(7) == 7
    with pytest.raises(InvalidArgument):
        page_size(-1)
