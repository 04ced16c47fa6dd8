"""Reward crediting against real PostgreSQL and Redis: forced credit, the bulk ingest
consumer, both racing on the same reward, token refusals, and recovery of the consumer
after a Redis wipe or a dead replica."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
import pytest
import redis.asyncio as redis

from account_svc.streams import GROUP, IngestStream, partitions_of, unsettled
from campaign.partitions import DEFAULT_PARTITIONS, partition_of
from campaign.publish import UNREADABLE_PARTITION, publish_rewards
from campaign.tokens import RewardGrant, sign
from mesh.account.v1 import account_pb2 as pb
from mesh.account.v1 import account_pb2_grpc
from meshkit.redis_keys import Keys
from tests import harness
from tests.harness import new_id, new_uid, start_service, user_metadata
from tests.integration.ledger_invariants import assert_ledger_invariants, connect_ledger, reward_token

Stub: TypeAlias = account_pb2_grpc.AccountServiceStub
EIGHT_DAYS = 8 * 24 * 3600


@pytest.fixture(scope="module")
async def server(mesh_env: dict[str, str]) -> AsyncIterator[Any]:
    saved = os.environ.get("ACCOUNT_SVC_ADDR")
    running = await start_service("account_svc", {
        "ACCOUNT_CREDIT_BLOCK_MS": "200", "ACCOUNT_CREDIT_CLAIM_IDLE_MS": "400",
    })
    yield running
    await running.stop(1.0)
    if saved is None:
        os.environ.pop("ACCOUNT_SVC_ADDR", None)
    else:
        os.environ["ACCOUNT_SVC_ADDR"] = saved


@pytest.fixture(scope="module")
async def account(server: Any) -> AsyncIterator[Stub]:
    async with harness.channel(server.address) as channel:
        yield account_pb2_grpc.AccountServiceStub(channel)


@pytest.fixture(scope="module")
def keys(mesh_env: dict[str, str]) -> Keys:
    return Keys(mesh_env["MESH_KEY_PREFIX"])


async def credited(reward_ids: list[str]) -> dict[str, int]:
    """reward id -> number of CREDIT entries for it."""
    conn = await connect_ledger()
    try:
        rows = await conn.fetch(
            "SELECT reward_id, count(*) AS n FROM entries WHERE kind = 'CREDIT'"
            " AND reward_id = ANY($1::text[]) GROUP BY reward_id", reward_ids)
    finally:
        await conn.close()
    return {r["reward_id"]: int(r["n"]) for r in rows}


async def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_credited(reward_ids: list[str], timeout: float = 15.0) -> dict[str, int]:
    async def all_there() -> dict[str, int] | None:
        found = await credited(reward_ids)
        return found if len(found) == len(set(reward_ids)) else None
    result: dict[str, int] = await wait_until(all_there, timeout, f"{len(reward_ids)} credits")
    return result


async def wait_ingest_settled(client: redis.Redis, keys: Keys, timeout: float = 15.0) -> None:
    """Every entry of every ingest partition delivered to the group and acknowledged."""
    async def settled() -> bool:
        return await unsettled(client, keys) == 0
    await wait_until(settled, timeout, "the ingest stream to be consumed")


async def refusals(client: redis.Redis, keys: Keys) -> dict[str, str]:
    """token -> reason, over the refusal streams of every partition."""
    out: dict[str, str] = {}
    for partition in partitions_of(keys, DEFAULT_PARTITIONS):
        rejected: Any = await client.xrange(partition.rejected)
        out.update({f[b"token"].decode(): f[b"reason"].decode() for _id, f in rejected})
    return out


async def balance(account: Stub, uid: int) -> int:
    reply = await account.GetBalance(pb.GetBalanceRequest(uid=uid), metadata=user_metadata(uid))
    return int(reply.balance_fen)


def rid(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["reward_id"])


async def test_force_credit_credits_each_reward_once(account: Stub) -> None:
    uid = new_uid()
    tokens = [reward_token(uid, amount) for amount in (100, 250, 5)]
    first = await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=tokens))
    assert [r.outcome for r in first.results] == [pb.CREDIT_OUTCOME_CREDITED] * 3
    assert [r.reward_id for r in first.results] == [rid(t) for t in tokens]
    assert [r.amount_fen for r in first.results] == [100, 250, 5]
    assert first.balance_fen == 355

    # Replays (whole list, a subset, the same token twice in one call) credit nothing more.
    again = await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[tokens[1], *tokens, tokens[0]]))
    assert {r.outcome for r in again.results} == {pb.CREDIT_OUTCOME_ALREADY_CREDITED}
    assert again.balance_fen == 355
    fresh = reward_token(uid, 45)
    mixed = await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[tokens[0], fresh, fresh]))
    assert [r.outcome for r in mixed.results] == [
        pb.CREDIT_OUTCOME_ALREADY_CREDITED, pb.CREDIT_OUTCOME_CREDITED, pb.CREDIT_OUTCOME_ALREADY_CREDITED]
    assert mixed.balance_fen == 400
    empty = await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[]))
    assert empty.balance_fen == 400 and len(empty.results) == 0
    assert await credited([rid(t) for t in [*tokens, fresh]]) == {rid(t): 1 for t in [*tokens, fresh]}
    await assert_ledger_invariants([uid])


def _altered(token: str) -> str:
    payload, seal = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["amount_fen"] *= 100
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + seal


def _bad_token(cause: str, uid: int) -> str:
    if cause == "forged":
        grant = RewardGrant(new_id("rw"), uid, 99_999, "red_packet", int(time.time()))
        return sign(grant, "k1", b"a-guessed-secret")
    if cause == "altered":
        return _altered(reward_token(uid, 100))
    if cause == "expired":
        return reward_token(uid, 100, issued_at=int(time.time()) - EIGHT_DAYS)
    if cause == "another user":
        return reward_token(uid + 1, 100)
    if cause == "unknown key":
        grant = RewardGrant(new_id("rw"), uid, 100, "red_packet", int(time.time()))
        return sign(grant, "k-retired", b"old-secret")
    if cause == "malformed":
        return "this-is-not-a-token"
    raise AssertionError(cause)


@pytest.mark.parametrize(
    "cause", ["forged", "altered", "expired", "another user", "unknown key", "malformed"])
async def test_refused_tokens_credit_nothing(account: Stub, cause: str) -> None:
    uid = new_uid()
    good = reward_token(uid, 300)
    bad = _bad_token(cause, uid)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[good, bad]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = info.value.details() or ""
    assert message.startswith("tokens[1]: token") and cause in message, message
    # One bad token refuses the whole call: the good one is not credited either.
    assert await balance(account, uid) == 0
    assert await credited([rid(good)]) == {}
    await assert_ledger_invariants([uid])


async def test_token_of_the_previous_key_still_credits(account: Stub) -> None:
    uid = new_uid()
    # k1 is the active key of this run; k2 is still listed, so what it signed verifies.
    by_k2 = reward_token(uid, 120, key_id="k2")
    by_k1 = reward_token(uid, 80)
    reply = await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[by_k2, by_k1]))
    assert [r.outcome for r in reply.results] == [pb.CREDIT_OUTCOME_CREDITED] * 2
    assert reply.balance_fen == 200


async def test_reward_id_replayed_with_other_content_is_a_conflict(account: Stub) -> None:
    uid = new_uid()
    reward_id = new_id("rw")
    first = reward_token(uid, 100, reward_id=reward_id)
    await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[first]))
    other = reward_token(uid, 10_000, reward_id=reward_id)
    fresh = reward_token(uid, 7)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[fresh, other]))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"tokens[1]: reward_id {reward_id} was already credited" in (info.value.details() or "")
    assert await balance(account, uid) == 100
    assert await credited([rid(fresh)]) == {}
    await assert_ledger_invariants([uid])


async def test_bulk_credit_consumes_the_ingest_stream(
    account: Stub, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(40)]
    tokens = [reward_token(uids[i % 40], 10 + i % 7) for i in range(1_200)]
    expected: dict[int, int] = {}
    for i, uid in enumerate(uids[i % 40] for i in range(1_200)):
        expected[uid] = expected.get(uid, 0) + 10 + i % 7
    # A reward the bulk path has already seen, replayed with another amount.
    conflicting = reward_token(uids[0], 999, reward_id=rid(tokens[0]))
    bad = [_bad_token("forged", uids[1]), _bad_token("expired", uids[2]), "garbage", conflicting]
    await publish_rewards(redis_client, keys, tokens[:600])
    await publish_rewards(redis_client, keys, [tokens[0], *bad, *tokens[600:], tokens[1]])

    counts = await wait_credited([rid(t) for t in tokens])
    assert set(counts.values()) == {1}
    await wait_ingest_settled(redis_client, keys)
    for uid in uids:
        assert await balance(account, uid) == expected[uid]

    reasons = await refusals(redis_client, keys)
    assert reasons.get(bad[0]) == "FORGED" and reasons.get(bad[1]) == "EXPIRED"
    assert reasons.get("garbage") == "MALFORMED" and reasons.get(conflicting) == "CONFLICT"
    await assert_ledger_invariants(uids)


async def test_same_token_through_bulk_and_force_at_once_credits_once(
    account: Stub, redis_client: redis.Redis, keys: Keys
) -> None:
    uids = [new_uid() for _ in range(50)]
    tokens = [reward_token(uid, 100 + i) for i, uid in enumerate(uids)]

    async def both(uid: int, token: str) -> pb.ForceCreditResponse:
        _ids, reply = await asyncio.gather(
            publish_rewards(redis_client, keys, [token]),
            account.ForceCredit(pb.ForceCreditRequest(uid=uid, tokens=[token])),
        )
        return reply

    replies: list[pb.ForceCreditResponse] = []
    for start in range(0, 50, 10):
        replies += await asyncio.gather(*(both(u, t) for u, t in zip(uids[start:start + 10],
                                                                     tokens[start:start + 10], strict=True)))
    await wait_ingest_settled(redis_client, keys)
    counts = await credited([rid(t) for t in tokens])
    assert counts == {rid(t): 1 for t in tokens}
    for i, (uid, reply) in enumerate(zip(uids, replies, strict=True)):
        assert reply.results[0].outcome in (pb.CREDIT_OUTCOME_CREDITED, pb.CREDIT_OUTCOME_ALREADY_CREDITED)
        assert await balance(account, uid) == 100 + i
    await assert_ledger_invariants(uids)


async def test_bulk_credit_recovers_after_redis_loses_the_stream(
    account: Stub, redis_client: redis.Redis, keys: Keys
) -> None:
    # What a Redis restart with no data looks like to the consumer: streams and groups gone.
    await redis_client.delete(*[p.stream for p in partitions_of(keys, DEFAULT_PARTITIONS)])
    uid = new_uid()
    tokens = [reward_token(uid, 10) for _ in range(20)]
    await publish_rewards(redis_client, keys, tokens)
    await wait_credited([rid(t) for t in tokens])
    await wait_ingest_settled(redis_client, keys)
    assert await balance(account, uid) == 200
    await assert_ledger_invariants([uid])


async def test_rewards_left_by_a_dead_consumer_are_taken_over(
    account: Stub, redis_client: redis.Redis, mesh_env: dict[str, str]
) -> None:
    # A namespace of its own, so this test's service instance is the only consumer.
    prefix = f"{mesh_env['MESH_KEY_PREFIX']}-{uuid.uuid4().hex[:6]}"
    own = Keys(prefix)
    uid = new_uid()
    tokens = [reward_token(uid, 7) for _ in range(30)]
    stream = own.credit_stream(partition_of(uid, DEFAULT_PARTITIONS))
    await redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await publish_rewards(redis_client, own, tokens, per_entry=10)
    # A replica read them and died before acknowledging anything.
    taken: Any = await redis_client.xreadgroup(GROUP, "dead-replica", {stream: ">"}, count=100)
    assert len(taken[0][1]) == 3
    saved = os.environ.get("ACCOUNT_SVC_ADDR")
    replica = await start_service("account_svc", {
        "MESH_KEY_PREFIX": prefix, "ACCOUNT_CREDIT_WORKERS": "1",
        "ACCOUNT_CREDIT_CLAIM_IDLE_MS": "300", "ACCOUNT_CREDIT_BLOCK_MS": "100",
    })
    try:
        await wait_credited([rid(t) for t in tokens])
        await wait_ingest_settled(redis_client, own)
    finally:
        await replica.stop(1.0)
        if saved is not None:
            os.environ["ACCOUNT_SVC_ADDR"] = saved
        try:
            summary: Any = await redis_client.xpending(stream, GROUP)
            # Stopped cleanly: the replica left nothing of its own unacknowledged.
            assert summary["pending"] == 0
        finally:
            await redis_client.delete(*[p.stream for p in partitions_of(own, DEFAULT_PARTITIONS)])
    assert await balance(account, uid) == 210
    await assert_ledger_invariants([uid])


async def test_trim_drops_only_acknowledged_entries(
    redis_client: redis.Redis, mesh_env: dict[str, str]
) -> None:
    own = Keys(f"{mesh_env['MESH_KEY_PREFIX']}-{uuid.uuid4().hex[:6]}")
    # One partition, so that a read of n entries takes n from the stream under test.
    stream = IngestStream(redis_client, own, "trim-test", partitions=1)
    # Tokens without a readable uid all travel on one partition.
    partition = own.credit_stream(UNREADABLE_PARTITION)
    try:
        await stream.ensure()
        ids = await publish_rewards(redis_client, own, [f"t{i}" for i in range(10)], per_entry=1,
                                    partitions=1)
        first = await stream.read(6, 0)
        await stream.settle(first, [])
        await stream.trim(exact=True)
        # Acknowledged entries go (the last delivered one stays as the group's mark).
        assert await redis_client.xlen(partition) == 5
        assert [m.id for m in await stream.read(2, 0)] == ids[6:8]
        await stream.trim(exact=True)
        # Read but not acknowledged: kept, however old.
        kept: Any = await redis_client.xrange(partition)
        assert [i.decode() for i, _ in kept] == ids[6:]
    finally:
        await redis_client.delete(partition)
