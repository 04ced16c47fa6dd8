"""Pure rules of gateway_mock: validation, masking, fault dice, capacity window, page tokens."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from gateway_mock.domain import (
    CapacityWindow,
    ChannelFaults,
    PayoutRequest,
    PayoutState,
    decode_page_token,
    encode_page_token,
    mask_account,
    page_size,
)
from meshkit.errors import InvalidArgument

CHANNELS = ("bank", "alipay", "balance")


def test_mask_keeps_only_last_four() -> None:
    assert mask_account("6222020200112233445") == "****3445"
    assert mask_account("abcd") == "****"
    assert mask_account("12345") == "****2345"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"order_id": ""}, "order_id"),
        ({"order_id": "x" * 200}, "order_id"),
        ({"uid": 0}, "uid"),
        ({"channel": "pigeon"}, "channel"),
        ({"method_id": ""}, "method_id"),
        ({"amount_fen": 0}, "amount_fen"),
    ],
)
def test_payout_request_validation_names_the_field(change: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"order_id": "o1", "uid": 7, "channel": "bank", "method_id": "m1",
                               "amount_fen": 100}
    base.update(change)
    with pytest.raises(InvalidArgument) as err:
        PayoutRequest(**base).validate(CHANNELS)  # type: ignore[arg-type]
    assert err.value.message.startswith(field)


def test_fault_validation() -> None:
    ChannelFaults("bank", latency_min_ms=5, latency_max_ms=5, async_rate=0.5,
                  definitive_failure_rate=0.5).validate(CHANNELS)
    for bad in (ChannelFaults("bank", lost_reply_rate=1.01), ChannelFaults("bank", async_delay_ms=-1),
                ChannelFaults("bank", latency_min_ms=2, latency_max_ms=1), ChannelFaults("atm")):
        with pytest.raises(InvalidArgument):
            bad.validate(CHANNELS)


def test_faults_json_round_trip_ignores_unknown_keys() -> None:
    faults = ChannelFaults("bank", capacity_per_second=9, lost_reply_rate=0.3, async_failure_rate=0.1)
    assert ChannelFaults.from_json("bank", {**faults.to_json(), "retired_knob": 1}) == faults


def test_decide_follows_the_rates() -> None:
    faults = ChannelFaults("bank", definitive_failure_rate=0.2, async_rate=0.3, async_failure_rate=0.5)
    rng = random.Random(7)
    decisions = [faults.decide(rng) for _ in range(20_000)]
    failed = sum(d.state is PayoutState.FAILED for d in decisions) / len(decisions)
    processing = [d for d in decisions if d.state is PayoutState.PROCESSING]
    assert 0.18 < failed < 0.22
    assert 0.28 < len(processing) / len(decisions) < 0.32
    async_failed = sum(d.async_outcome is PayoutState.FAILED for d in processing) / len(processing)
    assert 0.45 < async_failed < 0.55
    assert all(d.failure_reason == "account closed" for d in decisions if d.state is PayoutState.FAILED)


def test_no_faults_always_succeeds_without_latency() -> None:
    faults, rng = ChannelFaults("bank"), random.Random(1)
    assert all(faults.decide(rng).state is PayoutState.SUCCEEDED for _ in range(1000))
    assert not any(faults.transient(rng) or faults.reply_lost(rng) for _ in range(1000))
    assert faults.latency_s(rng) == 0.0
    assert 0.01 <= ChannelFaults("bank", latency_min_ms=10, latency_max_ms=20).latency_s(rng) <= 0.02


def test_capacity_window_slides() -> None:
    window = CapacityWindow()
    assert [window.admit(3, 10.0 + i * 0.1) for i in range(5)] == [True, True, True, False, False]
    assert window.admit(3, 11.01)  # the first call left the window
    assert not window.admit(3, 11.05)
    assert all(CapacityWindow().admit(0, 1.0) for _ in range(100))


def test_page_token_round_trip_and_garbage() -> None:
    when = datetime(2026, 2, 1, 20, 0, 0, 123456, tzinfo=UTC)
    assert decode_page_token(encode_page_token(when, "o-1|x")) == (when, "o-1|x")
    assert decode_page_token("") is None
    for bad in ("%%%", "bm90LWEtZGF0ZXxv", encode_page_token(when, "")):
        with pytest.raises(InvalidArgument):
            decode_page_token(bad)


def test_page_size_bounds() -> None:
    assert page_size(0) == 500
    assert page_size(10_000) == 5000
    with pytest.raises(InvalidArgument):
        page_size(-1)
