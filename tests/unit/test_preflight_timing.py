"""The pre-flight's time logic: the next gate opening in the campaign's time zone (windows
that cross midnight included), the default end of the night, clock offsets, and the
command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mesh.recon.v1 import recon_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.timeconv import to_ts
from tools.preflight.config import UsageError, addresses_of, from_args, migration_files
from tools.preflight.mesh_checks import judge_feeds, judge_gate
from tools.preflight.secret_checks import check_keys
from tools.preflight.timing import clock_offset, default_night_end, window_of
from tools.preflight.verdict import Status

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def test_window_across_midnight_seen_in_the_evening_opens_next_morning() -> None:
    window = window_of("22:00", "08:00", "Asia/Shanghai")
    assert window is not None
    now = at("2026-12-01T23:30")
    assert window.closed_at(now)
    assert window.next_open(now) == at("2026-12-02T08:00")


def test_window_across_midnight_seen_after_midnight_opens_the_same_morning() -> None:
    window = window_of("22:00", "08:00", "Asia/Shanghai")
    assert window is not None
    now = at("2026-12-02T01:00")
    assert window.closed_at(now)
    assert window.next_open(now) == at("2026-12-02T08:00")


def test_window_across_midnight_seen_while_open_opens_after_tonights_window() -> None:
    window = window_of("22:00", "08:00", "Asia/Shanghai")
    assert window is not None
    now = at("2026-12-02T12:00")
    assert not window.closed_at(now)
    assert window.next_close(now) == at("2026-12-02T22:00")
    assert window.next_open(now) == at("2026-12-03T08:00")


def test_same_day_window_after_it_ended_opens_tomorrow() -> None:
    window = window_of("00:00", "10:00", "Asia/Shanghai")
    assert window is not None
    assert window.next_open(at("2026-12-01T09:59")) == at("2026-12-01T10:00")
    assert window.next_open(at("2026-12-01T10:00")) == at("2026-12-02T10:00")


def test_next_open_is_computed_in_the_campaign_zone_not_utc() -> None:
    # 17:00 UTC on Dec 1 is 01:00 on Dec 2 in Shanghai: inside a 00:00-10:00 window.
    window = window_of("00:00", "10:00", "Asia/Shanghai")
    assert window is not None
    opens = window.next_open(datetime(2026, 12, 1, 17, 0, tzinfo=UTC))
    assert opens == at("2026-12-02T10:00")
    assert opens.astimezone(UTC) == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def test_no_window_and_a_bad_time() -> None:
    assert window_of("", "", "Asia/Shanghai") is None
    with pytest.raises(ValueError, match="HH:MM"):
        window_of("25:00", "08:00", "Asia/Shanghai")


def test_default_night_end_is_next_opening_plus_a_day() -> None:
    window = window_of("00:00", "10:00", "Asia/Shanghai")
    now = at("2026-12-01T20:00")
    assert default_night_end(window, now) == at("2026-12-03T10:00")
    assert default_night_end(None, now) == now + timedelta(hours=24)


def test_clock_offset_compares_with_the_midpoint_of_the_round_trip() -> None:
    assert clock_offset(100.0, 100.25, 100.1) == pytest.approx(0.2)
    assert clock_offset(100.0, 99.9, 100.2) == pytest.approx(-0.2)


def gate(**fields: object) -> withdraw_pb2.GateConfig:
    base: dict[str, object] = {"timezone": "Asia/Shanghai", "closed_start": "00:00", "closed_end": "10:00",
                               "release_modulus": 10, "release_k": 1, "version": 3}
    return withdraw_pb2.GateConfig(**{**base, **fields})


def test_gate_detail_prints_next_opening_in_the_campaign_zone_and_cohorts() -> None:
    result = judge_gate(gate(), None, None, at("2026-12-01T20:00"))
    assert result.status is Status.OK
    assert "next opens 2026-12-02 10:00 CST" in result.detail
    assert "uid mod 10 < 1 (10% of users)" in result.detail


def test_gate_without_window_or_not_matching_the_plan_fails() -> None:
    now = at("2026-12-01T20:00")
    assert judge_gate(gate(closed_start="", closed_end=""), None, None, now).reason == (
        "no closed window configured (the gate is open at all hours)")
    result = judge_gate(gate(), ("22:00", "08:00"), (2, 10), now)
    assert result.reason == "window is 00:00-10:00, expected 22:00-08:00; release is 1/10, expected 2/10"
    assert judge_gate(gate(), ("00:00", "10:00"), (1, 10), now).status is Status.OK


def test_feeds_behind_or_never_read_fail_by_name() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    status = recon_pb2.GetReconStatusResponse(positions=[
        recon_pb2.FeedPosition(feed="account", head_time=to_ts(now - timedelta(seconds=1))),
        recon_pb2.FeedPosition(feed="withdraw", head_time=to_ts(now - timedelta(seconds=7))),
        recon_pb2.FeedPosition(feed="gateway", head_time=to_ts(None)),
    ])
    result = judge_feeds(status, ("account", "withdraw", "gateway"), 5.0, now)
    assert result.reason == ("recon is 7.0s behind feed withdraw (limit 5s); "
                             "recon has not read feed gateway to its end")


def test_keys_refuse_the_dev_default_and_an_unknown_active_key() -> None:
    assert check_keys("", "").status is Status.FAIL
    assert check_keys("dev:dev-secret", "").reason == "reward token key dev is the dev default secret"
    assert check_keys("k1:s3cret", "k9").reason == (
        "REWARD_TOKEN_ACTIVE_KEY 'k9' is not among REWARD_TOKEN_KEYS")
    good = check_keys("k1:s3cret,k2:other", "k2")
    assert good.status is Status.OK
    assert "s3cret" not in good.detail


def test_replica_addresses_and_usage_errors() -> None:
    env = {"PAYOUT_SVC_ADDR": "10.0.0.1:1", "PAYOUT_SVC_ADDRS": "10.0.0.2:1, 10.0.0.1:1,"}
    assert addresses_of("payout_svc", env) == ("10.0.0.1:1", "10.0.0.2:1")
    assert addresses_of("recon_svc", {}) == ("127.0.0.1:50054",)
    with pytest.raises(UsageError, match="unknown check"):
        from_args(["--waive", "autovaccum"], {})
    with pytest.raises(UsageError, match="PREFLIGHT_REDIS_PERSISTENCE"):
        from_args([], {"PREFLIGHT_REDIS_PERSISTENCE": "always"})
    with pytest.raises(SystemExit) as exited:
        from_args(["--night-end", "tomorrow"], {})
    assert exited.value.code == 2


def test_migration_files_are_named_as_meshkit_records_them() -> None:
    names = migration_files("payout_svc")
    assert names[0] == "meshkit/000_changes.sql"
    assert "payout_svc/001_payout.sql" in names
