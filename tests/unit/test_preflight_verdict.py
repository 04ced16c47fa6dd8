"""The pre-flight's verdict: which line it prints, which exit status, what a waiver does."""

from __future__ import annotations

from tools.preflight.store_checks import persistence_mode
from tools.preflight.table import render
from tools.preflight.verdict import Result, Status, apply_waivers, exit_code, fail, final_line, judged, ok


def test_all_ok_is_go_with_exit_0() -> None:
    results = [ok("health", "5 SERVING"), ok("dlq", "empty")]
    assert final_line(results) == "PREFLIGHT GO"
    assert exit_code(results) == 0


def test_no_go_names_every_failed_check_and_its_reason_in_table_order() -> None:
    results = [
        fail("health", "payout_svc at 127.0.0.1:1 is UNREACHABLE"),
        ok("gate", "closed 00:00-10:00"),
        fail("dlq", "2 dead letter(s) on bank"),
    ]
    assert final_line(results) == ("PREFLIGHT NO-GO health: payout_svc at 127.0.0.1:1 is UNREACHABLE; "
                                   "dlq: 2 dead letter(s) on bank")
    assert exit_code(results) == 1


def test_waiver_turns_a_fail_into_waived_and_the_go_line_says_so() -> None:
    results = apply_waivers([fail("autovacuum", "PostgreSQL autovacuum is off"), ok("dlq", "empty"),
                             fail("clock", "Redis clock is +150 ms")], ["autovacuum", "clock"])
    assert [r.status for r in results] == [Status.WAIVED, Status.OK, Status.WAIVED]
    assert final_line(results) == "PREFLIGHT GO (waived: autovacuum, clock)"
    assert exit_code(results) == 0


def test_waiver_of_a_passing_check_leaves_it_ok_and_unmentioned() -> None:
    results = apply_waivers([ok("autovacuum", "on")], ["autovacuum"])
    assert results[0].status is Status.OK
    assert final_line(results) == "PREFLIGHT GO"


def test_waiver_does_not_cover_other_failures() -> None:
    results = apply_waivers([fail("autovacuum", "off"), fail("dlq", "1 dead letter(s) on bank")],
                            ["autovacuum"])
    assert final_line(results) == "PREFLIGHT NO-GO dlq: 1 dead letter(s) on bank"
    assert exit_code(results) == 1


def test_judged_joins_every_problem_into_the_reason() -> None:
    result = judged("rates", ["channel bank has no rate", "channel alipay has no rate"], "detail")
    assert result.status is Status.FAIL
    assert result.reason == "channel bank has no rate; channel alipay has no rate"
    assert result.detail == "detail"
    assert judged("rates", [], "all set").status is Status.OK


def test_table_has_one_row_per_check_and_keeps_multi_line_details_in_their_column() -> None:
    text = render([ok("health", "a SERVING\nb SERVING"), fail("dlq", "1 dead letter(s) on bank")])
    lines = text.splitlines()
    assert lines[0].split() == ["check", "status", "detail"]
    assert lines[1].split() == ["health", "OK", "a", "SERVING"]
    assert lines[2].strip() == "b SERVING"
    assert lines[2].index("b SERVING") == lines[1].index("a SERVING")
    assert lines[3].split()[:2] == ["dlq", "FAIL"]


def test_persistence_mode_from_redis_config() -> None:
    assert persistence_mode("no", "") == "none"
    assert persistence_mode("no", "3600 1 300 100") == "rdb"
    assert persistence_mode("yes", "") == "aof"
    assert persistence_mode("yes", "3600 1") == "aof"


async def test_a_check_that_raises_is_that_checks_fail() -> None:
    from tools.preflight.runner import safely

    async def broken() -> Result:
        raise RuntimeError("no such table")

    result = await safely("migrations", broken)
    assert result.status is Status.FAIL
    assert result.reason == "check failed: RuntimeError: no such table"
