"""The partition of a reward grant (campaign.partitions) and how the producer routes a token."""

from __future__ import annotations

import binascii
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from campaign.partitions import DEFAULT_PARTITIONS, MAX_PARTITIONS, partition_of, partitions_from
from campaign.publish import UNREADABLE_PARTITION, partition_of_token, uid_in
from campaign.tokens import RewardGrant, sign
from meshkit.redis_keys import Keys

ROOT = Path(__file__).resolve().parents[2]
UIDS = [7, 1000, 123_456_789, 10**12 + 3, 2**63 - 1]


def test_partition_is_the_same_in_another_process_and_hash_seed() -> None:
    # Producers and consumers are different processes (and may be other languages): the
    # partition must not depend on anything per process, such as Python's hash seed.
    code = ("from campaign.partitions import partition_of; "
            f"print([partition_of(u, p) for u in {UIDS} for p in (1, 4, 7, 16)])")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == str([partition_of(u, p) for u in UIDS for p in (1, 4, 7, 16)])


def test_partition_is_crc32_of_the_decimal_uid() -> None:
    # The definition a producer in another language implements (campaign/partitions.py);
    # pinned, because changing it would reorder a user's grants across a rollout.
    for uid in UIDS:
        for partitions in (1, 4, 16):
            assert partition_of(uid, partitions) == binascii.crc32(str(uid).encode("ascii")) % partitions
    assert [partition_of(uid, 4) for uid in UIDS] == [2, 3, 2, 2, 2]
    assert [partition_of(uid, 16) for uid in UIDS] == [2, 7, 6, 10, 14]


@pytest.mark.parametrize("partitions", [1, 2, 4, 7, 16])
def test_partition_is_in_range(partitions: int) -> None:
    assert {partition_of(uid, partitions) for uid in range(5_000)} == set(range(partitions))


@pytest.mark.parametrize("step", [1, 2, 4, 1000])
def test_partitions_spread_regular_uids(step: int) -> None:
    # Sequential uids, all-even ones, multiples of 4 or of 1000: uid % 4 would put the last
    # three in one or two partitions.
    counts = Counter(partition_of(10**12 + i * step, DEFAULT_PARTITIONS) for i in range(20_000))
    assert set(counts) == set(range(DEFAULT_PARTITIONS))
    assert max(counts.values()) < 1.1 * 20_000 / DEFAULT_PARTITIONS


def test_a_partition_still_spreads_over_the_consumers_writers() -> None:
    # A consumer splits a batch over its writers by uid % writers: the uids of one
    # partition must not all land on one writer.
    uids = [u for u in range(10**9, 10**9 + 40_000) if partition_of(u, DEFAULT_PARTITIONS) == 1]
    by_writer = Counter(u % 2 for u in uids)
    assert min(by_writer.values()) > 0.45 * len(uids)


def test_partition_count_from_the_environment() -> None:
    assert partitions_from({}) == DEFAULT_PARTITIONS
    assert partitions_from({"ACCOUNT_CREDIT_PARTITIONS": "8"}) == 8
    for bad in ("0", "-1", str(MAX_PARTITIONS + 1), "four"):
        with pytest.raises(ValueError, match="ACCOUNT_CREDIT_PARTITIONS"):
            partitions_from({"ACCOUNT_CREDIT_PARTITIONS": bad})


def test_producer_routes_a_token_by_the_uid_it_names() -> None:
    for uid in UIDS:
        token = sign(RewardGrant("rw-1", uid, 100, "red_packet", 1_700_000_000), "k1", b"s" * 32)
        assert uid_in(token) == uid
        assert partition_of_token(token, 16) == partition_of(uid, 16)
    for junk in ("garbage", "", "....", "e30.x", "bm90IGpzb24.x"):
        assert uid_in(junk) is None
        assert partition_of_token(junk, 16) == UNREADABLE_PARTITION


def _hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the text between the first { and the next }."""
    return key.split("{", 1)[1].split("}", 1)[0]


def test_partition_keys_share_a_slot_with_their_refusals_only() -> None:
    keys = Keys("mesh")
    assert len({_hash_tag(keys.credit_stream(n)) for n in range(4)}) == 4
    for n in range(4):
        assert _hash_tag(keys.credit_rejected(n)) == _hash_tag(keys.credit_stream(n))
