"""withdraw_svc gate rules: SetGate's update mask (AIP-134), the auto-release options, and
the automatic release's decision (advance while every channel drains in time)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from meshkit.errors import Code, DomainError
from withdraw_svc.domain import (
    GATE_FIELDS,
    ChannelLoad,
    GateConfig,
    apply_gate_mask,
    decide_release,
    drain_seconds,
    gate_mask,
    release_hold,
    validate_gate,
)

NOON = datetime(2025, 1, 29, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
AUTO = GateConfig(release_modulus=10, release_k=3, auto_release=True, auto_release_drain_seconds=60)


def refused(fn: object, *args: object) -> DomainError:
    with pytest.raises(DomainError) as err:
        fn(*args)  # type: ignore[operator]
    assert err.value.code is Code.INVALID_ARGUMENT
    return err.value


# -- update mask ---------------------------------------------------------------------------


def test_an_empty_mask_is_refused_and_says_how_to_replace_everything() -> None:
    err = refused(gate_mask, [])
    assert err.message == 'update_mask is required; use "*" to replace the whole configuration'


def test_star_names_every_field_but_the_version() -> None:
    assert gate_mask(["*"]) == GATE_FIELDS
    assert "version" not in GATE_FIELDS
    options = {"release_k", "auto_release", "auto_release_drain_seconds", "auto_release_step"}
    assert options <= set(GATE_FIELDS)
    assert "must be the only path" in refused(gate_mask, ["*", "release_k"]).message


def test_an_unknown_path_is_refused_by_name() -> None:
    err = refused(gate_mask, ["release_k", "closed_stat"])
    assert "'closed_stat'" in err.message
    assert "'version'" in refused(gate_mask, ["version"]).message
    assert gate_mask(["release_k", "release_k", "timezone"]) == ("release_k", "timezone")


def test_only_the_named_fields_change() -> None:
    current = GateConfig(timezone="UTC", closed_start="19:00", closed_end="01:00", release_modulus=10,
                         release_k=3, version=7)
    patch = GateConfig(release_k=6, closed_start="", timezone="Asia/Tokyo")
    merged = apply_gate_mask(current, patch, ["release_k"])
    assert merged == GateConfig(timezone="UTC", closed_start="19:00", closed_end="01:00",
                                release_modulus=10, release_k=6, version=7)
    everything = apply_gate_mask(current, patch, GATE_FIELDS)
    assert everything.closed_start == "" and everything.timezone == "Asia/Tokyo" and everything.version == 7


# -- auto-release options ------------------------------------------------------------------


def test_auto_release_needs_a_drain_time_and_a_sane_step() -> None:
    assert "at least 1" in refused(validate_gate, GateConfig(auto_release=True)).message
    assert "auto_release_drain_seconds" in refused(
        validate_gate, GateConfig(auto_release_drain_seconds=86_401)).message
    assert "auto_release_step" in refused(validate_gate, GateConfig(auto_release_step=-1)).message
    assert validate_gate(GateConfig(auto_release_step=0)).auto_release_step == 1
    assert validate_gate(AUTO) == AUTO


def test_the_options_survive_storage() -> None:
    config = GateConfig(release_modulus=10, release_k=1, auto_release=True, auto_release_drain_seconds=30,
                        auto_release_step=2)
    assert GateConfig.from_json(config.to_json(), 4) == replace(config, version=4)
    # A config stored before the options existed reads as "off".
    old = {"timezone": "UTC", "release_modulus": 10, "release_k": 1}
    assert GateConfig.from_json(old, 1).auto_release is False


# -- the decision --------------------------------------------------------------------------


def test_all_channels_within_the_drain_time_advance_one_step() -> None:
    loads = [ChannelLoad("bank", 1200, 20.0), ChannelLoad("alipay", 0, 50.0),
             ChannelLoad("balance", 10_000, 0.0, unlimited=True)]
    step = decide_release(AUTO, loads, NOON)
    assert step.advance and step.release_k == 4
    assert "bank backlog 1200 at 20/s = 60.0s" in step.reason
    assert "3 -> 4 of 10" in step.reason


def test_one_channel_over_holds() -> None:
    loads = [ChannelLoad("bank", 1201, 20.0), ChannelLoad("alipay", 0, 50.0)]
    step = decide_release(AUTO, loads, NOON)
    assert not step.advance and step.release_k == 3
    assert "bank would not drain within 60s" in step.reason
    assert drain_seconds(loads[0]) == pytest.approx(60.05)


def test_a_paused_channel_with_a_backlog_holds_and_without_one_does_not() -> None:
    held = decide_release(AUTO, [ChannelLoad("bank", 1, 0.0), ChannelLoad("alipay", 0, 50.0)], NOON)
    assert not held.advance and "bank paused (backlog 1)" in held.reason
    assert drain_seconds(ChannelLoad("bank", 1, 0.0)) is None
    assert decide_release(AUTO, [ChannelLoad("bank", 0, 0.0)], NOON).advance


def test_stops_at_m_and_never_passes_it() -> None:
    at_m = replace(AUTO, release_k=10)
    assert not decide_release(at_m, [ChannelLoad("bank", 0, 1.0)], NOON).advance
    near = replace(AUTO, release_k=9, auto_release_step=5)
    step = decide_release(near, [ChannelLoad("bank", 0, 1.0)], NOON)
    assert step.advance and step.release_k == 10


def test_holds_when_off_or_when_no_channel_is_known() -> None:
    off = replace(AUTO, auto_release=False)
    assert not decide_release(off, [ChannelLoad("bank", 0, 1.0)], NOON).advance
    blind = decide_release(AUTO, [], NOON)
    assert not blind.advance and "blind" in blind.reason


def test_holds_while_the_window_is_closed_even_with_empty_channels() -> None:
    night = replace(AUTO, closed_start="19:00", closed_end="01:00")
    at_night = datetime(2025, 1, 28, 20, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    held = decide_release(night, [ChannelLoad("bank", 0, 100.0)], at_night)
    assert not held.advance and held.release_k == 3
    assert "closed until 2025-01-29T01:00+08:00" in held.reason
    assert release_hold(night, at_night) == held
    assert release_hold(night, NOON) is None
    assert decide_release(night, [ChannelLoad("bank", 0, 100.0)], NOON).advance
