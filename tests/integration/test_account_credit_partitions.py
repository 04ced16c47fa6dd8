"""The partitioned reward ingest with several consumers, against real PostgreSQL and Redis:
two consumers of one group share four partitions, one dies holding unacknowledged entries
and the other takes them over; and the single stream of before partitioning is drained
after the upgrade, including what an old producer still writes to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis

from account_svc.consumer import BulkCreditor
from account_svc.repository import PgLedgerStore
from account_svc.service import CreditBatch, Ledger
from account_svc.streams import GROUP, IngestStream, partitions_of, unsettled
from campaign.partitions import partition_of
from campaign.publish import publish_rewards
from campaign.tokens import RewardGrant, parse_keys
from meshkit.redis_keys import Keys
from tests.harness import new_uid
from tests.integration import credit_support
from tests.integration.ledger_invariants import assert_ledger_invariants, reward_token
from tests.waiting import eventually

PARTITIONS = credit_support.PARTITIONS
# The shared fixtures, by the names the tests ask for.
pool = credit_support.pool
keys = credit_support.keys
running = credit_support.running


class StallingLedger(Ledger):
    """The real ledger for `healthy` statements, then a statement that never ends: a
    consumer process frozen in the middle of a batch, until it is killed."""

    def __init__(self, pool: asyncpg.Pool, healthy: int) -> None:
        super().__init__(PgLedgerStore(pool), parse_keys(os.environ["REWARD_TOKEN_KEYS"]), 3600)
        self.healthy = healthy
        self.stalled = asyncio.Event()

    async def credit(self, grants: Sequence[RewardGrant], **kwargs: Any) -> CreditBatch:
        if self.healthy <= 0:
            self.stalled.set()
            await asyncio.Event().wait()
        self.healthy -= 1
        return await super().credit(grants, **kwargs)


def creditor(ledger: Ledger, client: redis.Redis, keys: Keys, name: str) -> BulkCreditor:
    # Small batches, so the grants of the test make many of them; a short idle time before
    # a dead consumer's entries are taken over.
    return BulkCreditor(ledger, IngestStream(client, keys, name, partitions=PARTITIONS, legacy_check_s=0.2),
                        batch=100, block_ms=100, claim_idle_ms=300, writers=2)


async def pending_of(client: redis.Redis, keys: Keys, consumer: str) -> set[tuple[str, str]]:
    """(stream, entry id) of what `consumer` has read and not acknowledged, on every partition."""
    out: set[tuple[str, str]] = set()
    for partition in partitions_of(keys, PARTITIONS):
        rows: Any = await client.xpending_range(partition.stream, GROUP, min="-", max="+", count=10_000,
                                                consumername=consumer)
        out |= {(partition.stream, r["message_id"].decode()) for r in rows}
    return out


async def ledger_of(pool: asyncpg.Pool, uids: list[int]) -> tuple[dict[str, int], dict[int, int]]:
    """reward id -> CREDIT entries, and uid -> balance, for `uids`."""
    rows = await pool.fetch("SELECT reward_id, count(*) AS n FROM entries WHERE kind = 'CREDIT'"
                            " AND uid = ANY($1::bigint[]) GROUP BY reward_id", uids)
    balances = await pool.fetch("SELECT uid, balance FROM accounts WHERE uid = ANY($1::bigint[])", uids)
    return {r["reward_id"]: int(r["n"]) for r in rows}, {r["uid"]: int(r["balance"]) for r in balances}


def grants(uids: list[int], count: int) -> tuple[list[str], dict[str, int], dict[int, int]]:
    """`count` tokens over `uids`: the tokens, reward id -> 1 (each credited once), uid -> sum."""
    tokens: list[str] = []
    reward_ids: dict[str, int] = {}
    sums: dict[int, int] = {}
    for i in range(count):
        uid, amount, reward_id = uids[i % len(uids)], 1 + i % 97, f"rw-{uuid.uuid4().hex}"
        tokens.append(reward_token(uid, amount, reward_id=reward_id))
        reward_ids[reward_id] = 1
        sums[uid] = sums.get(uid, 0) + amount
    return tokens, reward_ids, sums


async def test_two_consumers_credit_every_grant_once_when_one_dies(
    pool: asyncpg.Pool, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(40)]
    tokens, expected_ids, expected_sums = grants(uids, 3_000)
    # Every partition carries some of them (so both consumers read several streams).
    assert {partition_of(uid, PARTITIONS) for uid in uids} == set(range(PARTITIONS))
    await publish_rewards(redis_client, keys, tokens, per_entry=10, partitions=PARTITIONS)

    # 24 statements: at least its first batch (100 entries, 10 chunks of 100 tokens, two
    # writers each) commits and is acknowledged before it freezes.
    doomed = creditor(StallingLedger(pool, healthy=24), redis_client, keys, "consumer-a")
    survivor = creditor(Ledger(PgLedgerStore(pool), parse_keys(os.environ["REWARD_TOKEN_KEYS"]), 3600),
                        redis_client, keys, "consumer-b")
    stopping = asyncio.Event()
    a = asyncio.create_task(doomed.run(stopping))
    try:
        await asyncio.wait_for(doomed.ledger.stalled.wait(), timeout=30)  # type: ignore[attr-defined]
        async with running(survivor):
            held = await pending_of(redis_client, keys, "consumer-a")
            assert held, "the frozen consumer holds entries it read and never acknowledged"
            a.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await a

            async def all_handled() -> bool:
                return await unsettled(redis_client, keys, PARTITIONS) == 0

            await eventually(all_handled, timeout=30.0, what="every partition to be consumed")
            # What A held was taken over (XAUTOCLAIM) and acknowledged by B: A is dead.
            assert await pending_of(redis_client, keys, "consumer-a") == set()
    finally:
        a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await a

    credited, balances = await ledger_of(pool, uids)
    assert credited == expected_ids
    assert balances == expected_sums
    assert doomed.credited > 0 and survivor.credited > 0
    # What A committed but never acknowledged was replayed by B and credited nothing more.
    assert doomed.credited + survivor.credited <= len(tokens)
    await assert_ledger_invariants(uids)


async def _publish_old_style(client: redis.Redis, keys: Keys, tokens: list[str], per_entry: int) -> list[str]:
    """What the producer of before partitioning wrote: packed entries on the one stream."""
    ids: list[str] = []
    for start in range(0, len(tokens), per_entry):
        packed = "\n".join(tokens[start:start + per_entry])
        entry_id = await client.xadd(keys.rewards_ingest(), {"tokens": packed})
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    return ids


async def test_old_single_stream_is_drained_after_the_upgrade(
    pool: asyncpg.Pool, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(12)]
    old_tokens, old_ids, old_sums = grants(uids, 300)
    new_tokens, new_ids, new_sums = grants(uids, 200)
    late_tokens, late_ids, late_sums = grants(uids, 50)
    # Before the upgrade: the old group exists; an old consumer read some entries and died
    # without acknowledging them, the rest was never delivered.
    await redis_client.xgroup_create(keys.rewards_ingest(), GROUP, id="0", mkstream=True)
    await _publish_old_style(redis_client, keys, old_tokens, per_entry=10)
    taken: Any = await redis_client.xreadgroup(GROUP, "old-consumer", {keys.rewards_ingest(): ">"}, count=7)
    assert len(taken[0][1]) == 7
    # After it: new producers write to the partitions.
    await publish_rewards(redis_client, keys, new_tokens, per_entry=10, partitions=PARTITIONS)

    consumer = creditor(Ledger(PgLedgerStore(pool), parse_keys(os.environ["REWARD_TOKEN_KEYS"]), 3600),
                        redis_client, keys, "upgraded")
    async with running(consumer):
        async def drained() -> bool:
            return await unsettled(redis_client, keys, PARTITIONS) == 0 and not consumer.stream.legacy_active

        await eventually(drained, timeout=30.0, what="the old stream and the partitions to be drained")
        credited, _ = await ledger_of(pool, uids)
        assert credited == {**old_ids, **new_ids}
        # An old producer still running during the rollout: looked at again, drained again.
        await _publish_old_style(redis_client, keys, late_tokens, per_entry=10)
        await eventually(drained, timeout=30.0, what="the late entries of the old stream to be drained")
        # Read then, never deleted: an old producer's XADD cannot race a deletion.
        assert await redis_client.exists(keys.rewards_ingest())

    credited, balances = await ledger_of(pool, uids)
    assert credited == {**old_ids, **new_ids, **late_ids}
    assert balances == {uid: old_sums[uid] + new_sums[uid] + late_sums[uid] for uid in uids}
    summary: Any = await redis_client.xpending(keys.rewards_ingest(), GROUP)
    assert summary["pending"] == 0
    await assert_ledger_invariants(uids)


async def test_deployment_without_the_old_stream_never_creates_it(
    pool: asyncpg.Pool, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(4)]
    tokens, reward_ids, _ = grants(uids, 40)
    await publish_rewards(redis_client, keys, tokens, partitions=PARTITIONS)
    consumer = creditor(Ledger(PgLedgerStore(pool), parse_keys(os.environ["REWARD_TOKEN_KEYS"]), 3600),
                        redis_client, keys, "fresh")
    async with running(consumer):
        async def handled() -> bool:
            return await unsettled(redis_client, keys, PARTITIONS) == 0
        await eventually(handled, timeout=30.0, what="the partitions to be consumed")
    assert (await ledger_of(pool, uids))[0] == reward_ids
    assert not await redis_client.exists(keys.rewards_ingest())


async def test_producer_puts_each_grant_on_its_uid_partition_in_order(
    redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(20)]
    owner = [uids[i % len(uids)] for i in range(120)]
    tokens = [reward_token(uid, 5) for uid in owner]
    # Routed by reading each token's payload, then by the uids the issuer passes along.
    await publish_rewards(redis_client, keys, tokens[:60], per_entry=7, partitions=PARTITIONS)
    await publish_rewards(redis_client, keys, tokens[60:], uids=owner[60:], per_entry=7,
                          partitions=PARTITIONS)
    seen: dict[int, list[str]] = {}
    owner_of = dict(zip(tokens, owner, strict=True))
    for n, partition in enumerate(partitions_of(keys, PARTITIONS)):
        entries: Any = await redis_client.xrange(partition.stream)
        for _id, fields in entries:
            for token in fields[b"tokens" if b"tokens" in fields else b"token"].decode().split("\n"):
                assert partition_of(owner_of[token], PARTITIONS) == n
                seen.setdefault(owner_of[token], []).append(token)
    # Every token once, and one user's in the order they were published.
    assert seen == {uid: [t for t, o in zip(tokens, owner, strict=True) if o == uid] for uid in uids}
    with pytest.raises(ValueError, match="uids for"):
        await publish_rewards(redis_client, keys, tokens[:3], uids=owner[:2], partitions=PARTITIONS)
