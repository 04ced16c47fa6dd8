"""Which partition of the reward ingest stream a grant travels on.

The stream is split in P partitions so that several account_svc consumers (and, on a Redis
Cluster, several nodes) share the night's load. A grant's partition is a stable hash of its
uid: one user's grants stay in one stream, in publishing order. Stable means the same on
every producer and consumer, in every process and language (not Python's salted `hash`), so
the definition is CRC-32 of the uid's decimal digits, modulo P.

Pure module: no I/O. P comes from ACCOUNT_CREDIT_PARTITIONS, which producers and account_svc
must agree on; it may grow (consumers read every partition up to their own P) but must not
shrink while partitions above the new P still hold grants.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

DEFAULT_PARTITIONS = 4
# Far more than one Redis (or cluster) needs; a larger value is a typo, not a plan.
MAX_PARTITIONS = 256


def partition_of(uid: int, partitions: int) -> int:
    """The partition (0 .. partitions-1) of `uid`'s grants."""
    # Plain uid % P would put every uid of a regular pattern (all even, a block of
    # 1000-aligned ids) in a few partitions, and lines up with the consumer's own
    # uid % writers split; CRC-32 mixes the digits first.
    return zlib.crc32(b"%d" % uid) % partitions


def checked_partitions(count: int, source: str = "ACCOUNT_CREDIT_PARTITIONS") -> int:
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"{source}={count}: must be between 1 and {MAX_PARTITIONS}")
    return count


def partitions_from(env: Mapping[str, str]) -> int:
    """P as a producer reads it from its environment (account_svc reads it in its Settings)."""
    raw = env.get("ACCOUNT_CREDIT_PARTITIONS") or ""
    if not raw:
        return DEFAULT_PARTITIONS
    try:
        count = int(raw)
    except ValueError as exc:
        raise ValueError(f"ACCOUNT_CREDIT_PARTITIONS={raw!r} is not an integer") from exc
    return checked_partitions(count)
