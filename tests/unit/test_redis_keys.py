"""Redis Cluster safety of the key layout: keys used together in one MULTI or script hash to
one slot (no sockets: the slot is CRC16 of the hash tag, as Redis computes it)."""

from __future__ import annotations

from redis.crc import key_slot

from meshkit.redis_client import cluster_mode
from meshkit.redis_keys import Keys

KEYS = Keys("mesh")


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_every_key_of_a_channel_shares_one_slot() -> None:
    for channel in ("bank", "alipay", "wechat"):
        keys = [KEYS.payout_stream(channel), KEYS.payout_dead_letters(channel),
                KEYS.payout_dead_orders(channel), KEYS.payout_awaiting(channel),
                KEYS.rate_limit(channel), KEYS.rate_window(channel),
                # the limiter's per-second counters, built inside its scripts
                f"{KEYS.rate_window(channel)}:1796150000", f"{KEYS.rate_window(channel)}:lineage"]
        assert len({slot(k) for k in keys}) == 1, channel


def test_channels_and_partitions_spread_over_slots() -> None:
    assert len({slot(KEYS.payout_stream(ch)) for ch in ("bank", "alipay", "wechat", "card")}) == 4
    for n in range(8):
        assert slot(KEYS.credit_stream(n)) == slot(KEYS.credit_rejected(n))
    assert len({slot(KEYS.credit_stream(n)) for n in range(8)}) == 8


def test_a_users_methods_version_and_cached_list_share_a_slot_and_users_spread() -> None:
    # withdraw_svc reads both in one MGET (withdraw_svc/streams.py), refused across slots.
    for uid in (1, 42, 9_540_920_000_123):
        assert slot(KEYS.methods_version(uid)) == slot(KEYS.bound_methods(uid))
    assert len({slot(KEYS.bound_methods(uid)) for uid in range(32)}) > 16


def test_order_locks_are_not_tied_to_one_slot() -> None:
    assert len({slot(KEYS.order_lock(f"o-{i}")) for i in range(32)}) > 16


def test_cluster_mode_is_said_explicitly() -> None:
    assert cluster_mode({}) is False
    assert cluster_mode({"REDIS_CLUSTER": "1"}) is True
    assert cluster_mode({"REDIS_CLUSTER": "no"}) is False
