"""Edges of the bulk credit batch, against real PostgreSQL and Redis: one reward several
times in one batch, bad tokens among good ones in one packed entry, a consumer that
committed and died before acknowledging (its batch redelivered to another consumer, whose
statement for all-new batches then finds the stored credits), and the ledger statement for
all-new batches given a partly stored one."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis

from account_svc import repository
from account_svc.consumer import BulkCreditor
from account_svc.domain import CreditOutcome
from account_svc.repository import PgLedgerStore
from account_svc.service import Ledger
from account_svc.streams import GROUP, IngestStream, Message, Rejection, partitions_of, unsettled
from campaign.publish import publish_rewards
from campaign.tokens import RewardGrant, parse_keys, sign
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


def ledger(pool: asyncpg.Pool) -> Ledger:
    return Ledger(PgLedgerStore(pool), parse_keys(os.environ["REWARD_TOKEN_KEYS"]), 3600)


def creditor(ledger: Ledger, client: redis.Redis, keys: Keys, name: str, *,
             stream: IngestStream | None = None, batch: int = 100) -> BulkCreditor:
    return BulkCreditor(ledger, stream or IngestStream(client, keys, name, partitions=PARTITIONS),
                        batch=batch, block_ms=100, claim_idle_ms=300, writers=2)


async def settled(client: redis.Redis, keys: Keys) -> None:
    async def done() -> bool:
        return await unsettled(client, keys, PARTITIONS) == 0
    await eventually(done, timeout=30.0, what="every partition to be consumed")


async def credits_of(pool: asyncpg.Pool, uids: list[int]) -> tuple[dict[str, int], dict[int, int]]:
    """reward id -> CREDIT entries, and uid -> balance, for `uids`."""
    rows = await pool.fetch("SELECT reward_id, count(*) AS n FROM entries WHERE kind = 'CREDIT'"
                            " AND uid = ANY($1::bigint[]) GROUP BY reward_id", uids)
    balances = await pool.fetch("SELECT uid, balance FROM accounts WHERE uid = ANY($1::bigint[])", uids)
    return {r["reward_id"]: int(r["n"]) for r in rows}, {r["uid"]: int(r["balance"]) for r in balances}


async def refusals(client: redis.Redis, keys: Keys) -> list[tuple[str, str]]:
    """(token, reason) of every refusal recorded, over all partitions."""
    out: list[tuple[str, str]] = []
    for partition in partitions_of(keys, PARTITIONS):
        rows: Any = await client.xrange(partition.rejected)
        out += [(f[b"token"].decode(), f[b"reason"].decode()) for _id, f in rows]
    return out


async def test_a_reward_repeated_inside_one_batch_is_credited_once(
    pool: asyncpg.Pool, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(8)]
    tokens = [reward_token(uids[i % 8], 10 + i) for i in range(40)]
    repeated = tokens[3]
    # The same reward id with other content, in the same batch: refused, credits nothing.
    conflicting = reward_token(uids[3], 5_000, reward_id=f"rw-{uuid.uuid4().hex}")
    first_of_it = reward_token(uids[3], 70, reward_id=reward_id_of(conflicting))
    batch = [*tokens[:20], repeated, repeated, first_of_it, *tokens[20:], conflicting, repeated]
    # One entry per partition at most, all read in one batch.
    await publish_rewards(redis_client, keys, batch, per_entry=100, partitions=PARTITIONS)
    consumer = creditor(ledger(pool), redis_client, keys, "c1", batch=1000)
    async with running(consumer):
        await settled(redis_client, keys)

    counts, balances = await credits_of(pool, uids)
    assert set(counts.values()) == {1} and len(counts) == 41
    expected: dict[int, int] = {}
    for i in range(40):
        expected[uids[i % 8]] = expected.get(uids[i % 8], 0) + 10 + i
    expected[uids[3]] += 70
    assert balances == expected
    # Repeats of a reward are not refusals; the other content under its id is.
    assert await refusals(redis_client, keys) == [(conflicting, "CONFLICT")]
    assert consumer.credited == 41
    await assert_ledger_invariants(uids)


def reward_id_of(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["reward_id"])


async def test_bad_tokens_inside_a_packed_entry_refuse_only_themselves(
    pool: asyncpg.Pool, redis_client: redis.Redis, keys: Keys
) -> None:
    uid = new_uid()
    good = [reward_token(uid, 100 + i) for i in range(50)]
    forged = sign(RewardGrant(f"rw-{uuid.uuid4().hex}", uid, 99_999, "red_packet", int(time.time())),
                  "k1", b"a-guessed-secret")
    payload, seal = good[10].split(".")
    altered = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB") + "." + seal
    packed = [*good[:25], forged, *good[25:40], altered, "garbage", *good[40:]]
    # Routed by the issuer's uid (the garbage too): one partition, one entry of 53 tokens.
    ids = await publish_rewards(redis_client, keys, packed, uids=[uid] * len(packed), per_entry=100,
                                partitions=PARTITIONS)
    assert len(ids) == 1
    consumer = creditor(ledger(pool), redis_client, keys, "c1")
    async with running(consumer):
        await settled(redis_client, keys)

    counts, balances = await credits_of(pool, [uid])
    assert len(counts) == 50 and set(counts.values()) == {1}
    assert balances == {uid: sum(100 + i for i in range(50))}
    found = dict(await refusals(redis_client, keys))
    assert found[forged] == "FORGED" and found["garbage"] == "MALFORMED"
    assert found[altered] in ("ALTERED", "MALFORMED") and len(found) == 3
    await assert_ledger_invariants([uid])


class AckFails(IngestStream):
    """A consumer whose process dies between the commit of its batches and their
    acknowledgement: acknowledging raises, so nothing it credited is ever acknowledged."""

    async def settle(self, messages: list[Message], rejections: list[Rejection]) -> None:
        raise ConnectionError("process killed before XACK")


async def test_a_batch_redelivered_after_a_crash_before_ack_credits_nothing_twice(
    pool: asyncpg.Pool, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(30)]
    tokens = [reward_token(uids[i % 30], 1 + i % 50) for i in range(600)]
    expected: dict[int, int] = {}
    for i in range(600):
        expected[uids[i % 30]] = expected.get(uids[i % 30], 0) + 1 + i % 50
    await publish_rewards(redis_client, keys, tokens, per_entry=10, partitions=PARTITIONS)

    doomed = creditor(ledger(pool), redis_client, keys, "dies",
                      stream=AckFails(redis_client, keys, "dies", partitions=PARTITIONS))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(doomed.run(asyncio.Event()), timeout=30)
    committed, _ = await credits_of(pool, uids)
    assert committed, "the dead consumer committed credits before it died"
    pending = [int((await redis_client.xpending(p.stream, GROUP))["pending"])
               for p in partitions_of(keys, PARTITIONS)]
    assert sum(pending) > 0, "what it committed is still pending: never acknowledged"

    # Another consumer takes the dead one's entries over; its statement for all-new
    # batches meets the stored credits, falls back, and credits only what is missing.
    survivor = creditor(ledger(pool), redis_client, keys, "lives")
    async with running(survivor):
        await settled(redis_client, keys)
    counts, balances = await credits_of(pool, uids)
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert balances == expected
    assert survivor.credited == 600 - len(committed)
    assert await refusals(redis_client, keys) == []
    await assert_ledger_invariants(uids)


async def test_statement_for_new_batches_falls_back_when_some_are_stored(pool: asyncpg.Pool) -> None:
    uid, other = new_uid(), new_uid()
    now = int(time.time())
    grants = sorted((RewardGrant(f"rw-{uuid.uuid4().hex}", (uid, other)[i % 2], 10 + i, "red_packet", now)
                     for i in range(10)), key=lambda g: (g.uid, g.reward_id))
    book = ledger(pool)
    async with book.store.connection() as conn:
        first = await book.credit(grants[:4], all_or_nothing=False, on=conn, expect_fresh=True)
        assert [r.outcome for r in first.results] == [CreditOutcome.CREDITED] * 4
        again = await book.credit(grants, all_or_nothing=False, on=conn, expect_fresh=True)
        # The next batches on this handle take the look-up statement straight away.
        assert conn._careful == repository.CAREFUL_AFTER_REPLAY  # type: ignore[attr-defined]
    assert [r.outcome for r in again.results] == (
        [CreditOutcome.ALREADY_CREDITED] * 4 + [CreditOutcome.CREDITED] * 6)
    counts, balances = await credits_of(pool, [uid, other])
    assert len(counts) == 10 and set(counts.values()) == {1}
    assert balances == {u: sum(g.amount_fen for g in grants if g.uid == u) for u in (uid, other)}
    await assert_ledger_invariants([uid, other])


class OneLaneFails(Ledger):
    """The real ledger, except that the credits of odd uids (one lane's partition with two
    writers) fail after `healthy` statements: a batch whose other part has committed."""

    def __init__(self, pool: asyncpg.Pool, healthy: int) -> None:
        super().__init__(PgLedgerStore(pool), parse_keys(os.environ["REWARD_TOKEN_KEYS"]), 3600)
        self.healthy = healthy

    async def credit(self, grants: Any, **kwargs: Any) -> Any:
        if grants and grants[0].uid % 2 == 1:
            if self.healthy <= 0:
                raise ConnectionResetError("database connection lost")
            self.healthy -= 1
        return await super().credit(grants, **kwargs)


async def test_a_lane_that_fails_stops_the_loop_and_its_batch_is_credited_on_restart(
    pool: asyncpg.Pool, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(20)]
    assert {u % 2 for u in uids} == {0, 1}
    tokens = [reward_token(uids[i % 20], 1 + i % 30) for i in range(400)]
    expected: dict[int, int] = {}
    for i in range(400):
        expected[uids[i % 20]] = expected.get(uids[i % 20], 0) + 1 + i % 30
    await publish_rewards(redis_client, keys, tokens, per_entry=10, partitions=PARTITIONS)

    broken = creditor(OneLaneFails(pool, healthy=1), redis_client, keys, "c1")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(broken.run(asyncio.Event()), timeout=30)
    pending = [int((await redis_client.xpending(p.stream, GROUP))["pending"])
               for p in partitions_of(keys, PARTITIONS)]
    assert sum(pending) > 0, "the batch of the failed part is not acknowledged"
    committed, _ = await credits_of(pool, uids)
    assert committed, "the other lane's part committed before the failure"

    # The same consumer restarted: its own pending entries first, then the rest.
    restarted = creditor(ledger(pool), redis_client, keys, "c1")
    async with running(restarted):
        await settled(redis_client, keys)
    counts, balances = await credits_of(pool, uids)
    assert len(counts) == 400 and set(counts.values()) == {1}
    assert balances == expected
    assert restarted.credited == 400 - len(committed)
    await assert_ledger_invariants(uids)
