"""Test users for load and drill runs: a reserved uid range, one bound payout method each,
accounts funded through signed reward tokens exactly as the campaign funds real users.

Test traffic is isolated by uid: every test uid lies in [TEST_UID_BASE, TEST_UID_END), and
a run owns the block `TEST_UID_BASE + run_slot * RUN_BLOCK`, so runs never share users and a
user's whole ledger belongs to one run (the drill's conservation check relies on that).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from campaign.partitions import partitions_from
from campaign.publish import publish_rewards
from campaign.tokens import RewardGrant, keyring_from_env
from mesh.account.v1 import account_pb2
from mesh.gateway.v1 import gateway_pb2
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.settings import DEFAULT_REDIS_URL
from tools.loadlib.clients import MeshClients, retry_unavailable

log = logging.getLogger(__name__)

TEST_UID_BASE = 9_000_000_000_000
RUN_BLOCK = 1_000_000
RUN_SLOTS = 900_000
TEST_UID_END = TEST_UID_BASE + RUN_BLOCK * RUN_SLOTS
# One reward token never carries more than this; bigger funding is split.
TOKEN_CAP_FEN = 1_000_000
DEFAULT_CHANNELS = ("bank", "alipay", "balance")

T = TypeVar("T")


def is_test_uid(uid: int) -> bool:
    return TEST_UID_BASE <= uid < TEST_UID_END


def new_run_slot() -> int:
    return secrets.randbelow(RUN_SLOTS)


def run_uids(run_slot: int, count: int) -> list[int]:
    if not 0 <= run_slot < RUN_SLOTS:
        raise ValueError(f"run slot must be in 0..{RUN_SLOTS - 1}")
    if not 0 < count <= RUN_BLOCK:
        raise ValueError(f"user count must be in 1..{RUN_BLOCK}")
    first = TEST_UID_BASE + run_slot * RUN_BLOCK
    return [first + i for i in range(count)]


@dataclass
class TestUser:
    uid: int
    channel: str
    method_id: str
    funded_fen: int
    # Client-side budget so the driver never asks for more than the user holds: refusals for
    # insufficient balance would only pollute the error figures.
    remaining_fen: int = 0


@dataclass
class SeedResult:
    users: list[TestUser]
    run_slot: int
    bind_seconds: float
    fund_seconds: float
    credited_by_stream: int
    credited_by_force: int


async def bounded_gather(items: Sequence[T], work: Callable[[T], Awaitable[None]], concurrency: int) -> None:
    queue: asyncio.Queue[T] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await work(item)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))


async def call_with_retry(make_call: Callable[[], Awaitable[T]], what: str, attempts: int = 8) -> T:
    """Seeding talks to a mesh that may be warming up: UNAVAILABLE is retried with backoff."""
    try:
        return await retry_unavailable(make_call, attempts, delay_s=0.1, max_delay_s=2.0)
    except grpc.aio.AioRpcError as err:
        raise RuntimeError(f"{what}: {err.code().name} {err.details()}") from err


async def discover_channels(clients: MeshClients) -> list[str]:
    """The channels payout_svc drains, else the default three."""
    channels, _paused = await channels_and_paused(clients)
    return channels


async def channels_and_paused(clients: MeshClients) -> tuple[list[str], list[str]]:
    """The channels payout_svc drains (else the default three), and those of them paused
    (rate 0 or no rate configured: nothing on them is ever paid)."""
    from mesh.payout.v1 import payout_pb2

    try:
        reply = await clients.payout_admin.GetChannelStats(
            payout_pb2.GetChannelStatsRequest(), timeout=3.0, metadata=clients.metadata)
    except grpc.aio.AioRpcError:
        return list(DEFAULT_CHANNELS), []
    channels = [c.channel for c in reply.channels] or list(DEFAULT_CHANNELS)
    return channels, [c.channel for c in reply.channels if c.paused]


def token_amounts(total_fen: int) -> list[int]:
    parts = [TOKEN_CAP_FEN] * (total_fen // TOKEN_CAP_FEN)
    if total_fen % TOKEN_CAP_FEN:
        parts.append(total_fen % TOKEN_CAP_FEN)
    return parts


async def seed_users(
    clients: MeshClients,
    uids: Sequence[int],
    funding_fen: int,
    *,
    run_slot: int,
    channels: Sequence[str],
    concurrency: int = 64,
    fund_via: str = "stream",
    credit_timeout_s: float = 60.0,
    stream_grace_s: float = 15.0,
    say: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
) -> SeedResult:
    """Bind a method per user (channels round-robin), fund every user with `funding_fen`
    through signed reward tokens, and return once every balance shows the funding.

    fund_via "stream" publishes the tokens to the ingest stream (bulk crediting) and
    force-credits whatever has not landed after `stream_grace_s`; "force" force-credits at
    once. Rewards are idempotent per reward id, so the two paths may overlap safely."""
    if not uids:
        return SeedResult([], run_slot, 0.0, 0.0, 0, 0)
    env = os.environ if environ is None else environ
    users = [
        TestUser(uid=uid, channel=channels[i % len(channels)], method_id=f"lt-{uid}",
                 funded_fen=funding_fen, remaining_fen=funding_fen)
        for i, uid in enumerate(uids)
    ]
    await refuse_used_uids(clients, users, run_slot, concurrency)

    started = time.monotonic()
    await bind_methods(clients, users, concurrency)
    bind_seconds = time.monotonic() - started
    say(f"seed: bound {len(users)} payout methods over {', '.join(channels)} in {bind_seconds:.1f}s")

    tokens = funding_tokens(users, funding_fen, env)
    started = time.monotonic()
    if fund_via == "stream":
        await publish_funding(env, tokens)
        pending = await wait_credited(clients, users, stream_grace_s, concurrency)
    else:
        pending = list(users)
    by_force = len(pending)
    if pending:
        await force_credit(clients, pending, tokens, concurrency)
        pending = await wait_credited(clients, pending, credit_timeout_s, concurrency)
    if pending:
        raise RuntimeError(f"{len(pending)} test users not credited within {credit_timeout_s:.0f}s "
                           f"(e.g. uid {pending[0].uid})")
    fund_seconds = time.monotonic() - started
    say(f"seed: funded {len(users)} users with {funding_fen} fen each in {fund_seconds:.1f}s "
        f"({len(users) - by_force} by the ingest stream, {by_force} by ForceCredit)")
    return SeedResult(users, run_slot, bind_seconds, fund_seconds, len(users) - by_force, by_force)


async def seed_bench_users(addresses: Mapping[str, str], environ: Mapping[str, str], count: int,
                           funding_fen: int, *, concurrency: int,
                           say: Callable[[str], None] = print) -> list[TestUser]:
    """Users for a benchmark of the mesh at `addresses` (its keys in `environ`): a fresh
    run's uid block, funded by ForceCredit at once, since a bench measures what comes after
    the funding, not the ingest."""
    env = {**environ, **{f"{svc.upper()}_ADDR": address for svc, address in addresses.items()}}
    clients = MeshClients.from_env("bench", env)
    try:
        run_slot = new_run_slot()
        seeded = await seed_users(clients, run_uids(run_slot, count), funding_fen, run_slot=run_slot,
                                  channels=DEFAULT_CHANNELS, concurrency=concurrency, fund_via="force",
                                  say=say, environ=env)
    finally:
        await clients.close()
    return seeded.users


async def refuse_used_uids(clients: MeshClients, users: Sequence[TestUser], run_slot: int,
                           concurrency: int) -> None:
    """A used uid would break the per-user conservation check of the drill: refuse early
    (the first users of the block are enough to tell a used run slot)."""
    used: list[int] = []

    async def check_fresh(user: TestUser) -> None:
        reply = await call_with_retry(
            lambda: clients.account.GetBalance(account_pb2.GetBalanceRequest(uid=user.uid),
                                               timeout=5.0, metadata=clients.user_metadata(user.uid)),
            f"GetBalance uid={user.uid}")
        if reply.balance_fen != 0:
            used.append(user.uid)

    await bounded_gather(users[:50], check_fresh, concurrency)
    if used:
        raise RuntimeError(f"test uids already hold money (e.g. uid {used[0]}): run slot {run_slot} "
                           "was used before; pick another --run-slot")


async def bind_methods(clients: MeshClients, users: Sequence[TestUser], concurrency: int) -> None:
    async def bind(user: TestUser) -> None:
        await call_with_retry(
            lambda: clients.gateway.BindMethod(
                gateway_pb2.BindMethodRequest(uid=user.uid, channel=user.channel,
                                              account=f"62{user.uid:017d}", method_id=user.method_id),
                timeout=5.0, metadata=clients.metadata),
            f"BindMethod uid={user.uid}")

    await bounded_gather(users, bind, concurrency)


def funding_tokens(users: Sequence[TestUser], funding_fen: int,
                   env: Mapping[str, str]) -> dict[int, list[str]]:
    """Per uid, reward tokens signed as the campaign signs them, adding up to the funding."""
    ring = keyring_from_env(env)
    now = int(time.time())
    return {
        user.uid: [
            ring.sign(RewardGrant(reward_id=f"lt-{user.uid}-{n}", uid=user.uid, amount_fen=amount,
                                  source="load_test", issued_at=now))
            for n, amount in enumerate(token_amounts(funding_fen))
        ]
        for user in users
    }


async def publish_funding(env: Mapping[str, str], tokens: Mapping[int, list[str]]) -> None:
    """The tokens onto the ingest stream, as the campaign publishes rewards."""
    client = open_redis(env.get("REDIS_URL") or DEFAULT_REDIS_URL, env=env)
    try:
        await publish_rewards(client, Keys(env.get("MESH_KEY_PREFIX") or "mesh"),
                              [t for user_tokens in tokens.values() for t in user_tokens],
                              uids=[uid for uid, user_tokens in tokens.items() for _ in user_tokens],
                              partitions=partitions_from(env))
    finally:
        await client.aclose()


async def force_credit(clients: MeshClients, users: Sequence[TestUser], tokens: Mapping[int, list[str]],
                       concurrency: int) -> None:
    async def force(user: TestUser) -> None:
        await call_with_retry(
            lambda: clients.account.ForceCredit(
                account_pb2.ForceCreditRequest(uid=user.uid, tokens=tokens[user.uid]),
                timeout=10.0, metadata=clients.metadata),
            f"ForceCredit uid={user.uid}")

    await bounded_gather(users, force, concurrency)


async def wait_credited(clients: MeshClients, users: Sequence[TestUser], timeout_s: float,
                        concurrency: int) -> list[TestUser]:
    """Poll balances until every user holds its funding; returns those that still do not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = list(users)
    while pending:
        short = await _short_of_funding(clients, pending, concurrency)
        pending = short
        if not pending or loop.time() >= deadline:
            break
        await asyncio.sleep(0.5)
    return pending


async def _short_of_funding(clients: MeshClients, users: Sequence[TestUser],
                            concurrency: int) -> list[TestUser]:
    short: list[TestUser] = []

    async def check(user: TestUser) -> None:
        try:
            reply = await clients.account.GetBalance(
                account_pb2.GetBalanceRequest(uid=user.uid), timeout=5.0,
                metadata=clients.user_metadata(user.uid))
        except grpc.aio.AioRpcError:
            short.append(user)
            return
        if reply.balance_fen < user.funded_fen:
            short.append(user)

    await bounded_gather(users, check, concurrency)
    return short
