"""The payout outbox relay on its own, against real PostgreSQL and Redis: winning the Redis
epoch when a reply is lost, and the sweep that republishes lost jobs (PAYING orders too,
never dead letters, once per job across relays, at most the cap). Each test has a schema
and a Redis key prefix of its own; no services run."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from meshkit.db import connect_schema, create_pool, migrate
from meshkit.redis_client import cluster_mode, is_cluster
from meshkit.redis_keys import Keys
from payout_svc.domain import Job
from payout_svc.streams import ChannelQueue
from tests.harness import new_uid, patched_env
from tests.waiting import eventually
from withdraw_svc.domain import OrderState
from withdraw_svc.records import NewOrder
from withdraw_svc.relay import OutboxRelay
from withdraw_svc.repository import Repository
from withdraw_svc.server import MIGRATIONS
from withdraw_svc.settings import Settings
from withdraw_svc.streams import RedisPort

GROUP = "payout"


@dataclass
class RelayWorld:
    settings: Settings
    pool: asyncpg.Pool
    repo: Repository
    redis: redis.Redis
    keys: Keys

    def relay(self, client: redis.Redis | None = None, **settings: Any) -> OutboxRelay:
        return OutboxRelay(dataclasses.replace(self.settings, **settings), self.repo,
                           RedisPort(client or self.redis, self.keys))

    async def order(self, channel: str = "bank") -> str:
        """A deducted order with its PAYOUT job."""
        order_id = f"wd-{uuid.uuid4().hex[:16]}"
        uid = new_uid()
        await self.repo.insert_order(NewOrder(order_id, uid, uuid.uuid4().hex, 300, channel, "m-1"))
        assert await self.repo.mark_deducted(order_id, {"uid": uid, "channel": channel, "method_id": "m-1",
                                                        "amount_fen": 300})
        return order_id

    async def begin(self, order_id: str) -> None:
        """What BeginPayout does when a worker takes the message: PENDING_PAYOUT -> PAYING."""
        assert await self.repo.transition(order_id, [OrderState.PENDING_PAYOUT], OrderState.PAYING, "begun")

    async def publish(self) -> int:
        return await self.relay(relay_batch=500).publish_pending()

    async def entries(self, channel: str, order_id: str) -> int:
        found: Any = await self.redis.xrange(self.keys.payout_stream(channel))
        return sum(1 for _, f in found if order_id.encode() in f[b"job"])

    async def take_and_ack(self, channel: str) -> list[Any]:
        """A consumer takes every message and acknowledges it: delivered, then lost (a
        crash after the ack, a follow-up dropped)."""
        stream = self.keys.payout_stream(channel)
        taken: Any = await self.redis.xreadgroup(GROUP, "lost-worker", {stream: ">"}, count=100)
        ids = [entry_id for _, entries in taken for entry_id, _ in entries]
        if ids:
            await self.redis.xack(stream, GROUP, *ids)
        return [(entry_id, fields) for _, entries in taken for entry_id, fields in entries]

    async def group(self, channel: str) -> None:
        await self.redis.xgroup_create(self.keys.payout_stream(channel), GROUP, id="$", mkstream=True)

    async def wipe(self) -> None:
        async for key in self.redis.scan_iter(match=f"{self.keys.prefix}:*"):
            await self.redis.delete(key)

    async def published_at(self, order_id: str) -> Any:
        return await self.pool.fetchval(
            "SELECT published_at FROM outbox WHERE kind = 'PAYOUT' AND order_id = $1", order_id)


@pytest.fixture
async def world(mesh_env: dict[str, str], redis_client: redis.Redis) -> AsyncIterator[RelayWorld]:
    tag = uuid.uuid4().hex[:8]
    schema = f"withdraw_relay_{tag}"
    keys = Keys(f"{mesh_env['MESH_KEY_PREFIX']}:relay{tag}")
    with patched_env({**mesh_env, "WITHDRAW_SVC_DB_SCHEMA": schema, "MESH_KEY_PREFIX": keys.prefix,
                      "WITHDRAW_REPUBLISH_AFTER_S": "0"}):
        settings = Settings.from_env()
    pool = await create_pool(mesh_env["DATABASE_URL"], schema, min_size=1, max_size=4)
    await migrate(pool, schema, MIGRATIONS)
    yield RelayWorld(settings, pool, Repository(pool), redis_client, keys)
    await pool.close()
    async for key in redis_client.scan_iter(match=f"{keys.prefix}:*"):
        await redis_client.delete(key)


def losing_the_reply_to_one_set(key: str) -> type[Connection]:
    """A connection that lets Redis apply the first SET of `key` and then loses its reply,
    as a connection dropped at that moment would."""
    armed = [True]

    class LosesOneSetReply(Connection):
        last: tuple[Any, ...] = ()

        async def send_command(self, *args: Any, **kwargs: Any) -> None:
            self.last = args
            await super().send_command(*args, **kwargs)

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            reply = await super().read_response(*args, **kwargs)
            if armed and self.last[:2] == ("SET", key):
                armed.clear()
                raise RedisConnectionError("connection lost before the reply (test)")
            return reply

    return LosesOneSetReply


async def flaky_client(mesh_env: dict[str, str], connection_class: type[Connection],
                       retries: int, epoch_key: str) -> redis.Redis:
    url = redis.ConnectionPool.from_url(mesh_env["REDIS_URL"]).connection_kwargs
    host, port = url["host"], url["port"]
    if cluster_mode(mesh_env):
        # A plain connection to the master of the epoch key's slot: the key these tests
        # touch (RedisCluster takes no connection class of a caller's).
        cluster = RedisCluster.from_url(mesh_env["REDIS_URL"])
        try:
            await cluster.initialize()
            node = cluster.get_node_from_key(epoch_key)
            host, port = node.host, node.port
        finally:
            await cluster.aclose()
    pool = redis.ConnectionPool(connection_class=connection_class, host=host, port=port,
                                retry=Retry(NoBackoff(), retries))
    return redis.Redis(connection_pool=pool)


async def test_a_lost_set_nx_reply_still_wins_the_epoch(world: RelayWorld, mesh_env: dict[str, str]) -> None:
    order_id = await world.order()
    relay = world.relay()
    await relay.start()
    assert await world.publish() == 1
    await world.wipe()
    # redis.asyncio.Redis(host=...) retries a command up to 10 times by default: the retry
    # of the epoch's SET NX finds the key its first try wrote and answers "not set".
    client = await flaky_client(mesh_env, losing_the_reply_to_one_set(world.keys.epoch()), retries=10,
                                epoch_key=world.keys.epoch())
    try:
        flaky = world.relay(client)
        flaky.epoch = relay.epoch
        await flaky.check_epoch()
        assert flaky.epoch is not None and await client.get(world.keys.epoch()) == flaky.epoch.encode()
    finally:
        await client.aclose()
    assert await world.published_at(order_id) is None, "the win went unnoticed: nothing republished"
    assert await world.publish() == 1
    assert await world.entries("bank", order_id) == 1


async def test_a_claim_whose_reply_was_lost_is_won_on_the_next_pass(
    world: RelayWorld, mesh_env: dict[str, str]
) -> None:
    order_id = await world.order()
    await world.relay().start()
    assert await world.publish() == 1
    await world.wipe()
    client = await flaky_client(mesh_env, losing_the_reply_to_one_set(world.keys.epoch()), retries=0,
                                epoch_key=world.keys.epoch())
    try:
        relay = world.relay(client)
        with pytest.raises(RedisConnectionError):
            await relay.check_epoch()  # the SET landed; its reply did not
        await relay.check_epoch()      # the relay's own retry, one pass later
    finally:
        await client.aclose()
    assert await world.published_at(order_id) is None
    assert await world.publish() == 1 and await world.entries("bank", order_id) == 1


async def test_the_sweep_picks_up_a_paying_order_nothing_waits_on(world: RelayWorld) -> None:
    await world.group("bank")
    lost, awaited, locked = [await world.order() for _ in range(3)]
    assert await world.publish() == 3
    await world.take_and_ack("bank")
    for order_id in (lost, awaited, locked):
        await world.begin(order_id)
    # Only the first has nothing waiting on it: the second's asynchronous answer is being
    # followed, the third is in a worker's hands.
    await world.redis.zadd(world.keys.payout_awaiting("bank"), {awaited: 0})
    await world.redis.set(world.keys.order_lock(locked), "a-worker", px=60_000)
    assert await world.relay().republish_stale() == 1
    assert await world.published_at(lost) is None
    assert await world.published_at(awaited) is not None and await world.published_at(locked) is not None
    assert await world.publish() == 1
    assert await world.entries("bank", lost) == 2


async def test_a_dead_lettered_order_is_not_republished(world: RelayWorld) -> None:
    await world.group("bank")
    waiting, paying = await world.order(), await world.order()
    assert await world.publish() == 2
    stream = world.keys.payout_stream("bank")
    queue = ChannelQueue(world.redis, world.keys, GROUP, "worker")
    # Three failed attempts each: one never got as far as BeginPayout, the other did.
    await world.begin(paying)
    for delivery in await queue.read("bank", 10, 100):
        assert delivery.job is not None
        failed: Job = dataclasses.replace(delivery.job, attempt=3)
        await queue.dead_letter(delivery, failed, "gateway down", 3)
    assert await world.redis.xlen(world.keys.payout_dead_letters("bank")) == 2
    assert (await world.redis.xpending(stream, GROUP))["pending"] == 0
    relay = world.relay()
    assert await relay.republish_stale() == 0
    assert await world.published_at(waiting) is not None and await world.published_at(paying) is not None
    assert await relay.republish_stale() == 0  # and not on the next pass either
    # An operator's replay puts them back on the stream and takes them off the record.
    assert await queue.dead_letters.replay("bank", []) == 2
    assert await world.redis.hlen(world.keys.payout_dead_orders("bank")) == 0


async def test_two_relays_sweeping_at_once_republish_a_job_once(
    world: RelayWorld, mesh_env: dict[str, str]
) -> None:
    await world.group("alipay")
    order_id = await world.order("alipay")
    assert await world.publish() == 1
    await world.take_and_ack("alipay")
    first, second = world.relay(), world.relay()
    # Both relays must have looked at the job before either claims it: a transaction of
    # the test's holds the row, so both claims queue behind it, and then go one by one.
    blocker = await connect_schema(mesh_env["DATABASE_URL"], world.settings.common.db_schema)
    try:
        hold = blocker.transaction()
        await hold.start()
        await blocker.execute("SELECT 1 FROM outbox WHERE kind = 'PAYOUT' AND order_id = $1 FOR UPDATE",
                              order_id)
        sweeps = asyncio.gather(first.republish_stale(), second.republish_stale())

        async def both_claims_wait() -> bool:
            # Asked on another connection: the holding transaction would see a cached
            # snapshot of pg_stat_activity. (The second claim waits behind the first.)
            waiting = await world.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")
            return waiting == 2

        await eventually(both_claims_wait, timeout=5, what="both relays' claims to queue on the job")
        await hold.rollback()
        assert sorted(await asyncio.wait_for(sweeps, 5)) == [0, 1]
    finally:
        await blocker.close()
    assert await world.publish() == 1
    assert await world.entries("alipay", order_id) == 2
    assert await world.pool.fetchval("SELECT republished FROM outbox WHERE order_id = $1", order_id) == 1


async def test_the_sweep_republishes_a_job_at_most_the_cap(world: RelayWorld) -> None:
    await world.group("bank")
    order_id = await world.order()
    assert await world.publish() == 1
    relay = world.relay()  # WITHDRAW_REPUBLISH_CAP defaults to 1
    await world.take_and_ack("bank")
    assert await relay.republish_stale() == 1
    assert await world.publish() == 1
    # Lost again: the cap is reached, the job is left for the compensation job.
    await world.take_and_ack("bank")
    assert await relay.republish_stale() == 0
    assert await world.publish() == 0 and await world.entries("bank", order_id) == 2
    # A higher cap lets it go out once more.
    assert await world.relay(republish_cap=2).republish_stale() == 1


async def master_replid(client: Any, key: str) -> str:
    """INFO replication's id of the master serving `key` (on a cluster, that key's node)."""
    if is_cluster(client):
        info = await client.info("replication", target_nodes=client.get_node_from_key(key))
    else:
        info = await client.info("replication")
    return str(info["master_replid"])


async def test_a_new_lineage_of_the_channel_master_republishes_what_it_lost(world: RelayWorld) -> None:
    """A replica promoted after its master died lacks the last entries the master took: the
    relay, told by the channel master's new replication id, re-opens exactly the jobs that
    nothing in Redis holds any more (the failover itself: tests/cluster)."""
    await world.group("bank")
    lost, lost_too, kept, dead, awaited = [await world.order() for _ in range(5)]
    relay, other = world.relay(), world.relay()
    assert await relay.publish_pending() == 5
    replid = await master_replid(world.redis, world.keys.payout_stream("bank"))
    assert relay.lineages == {"bank": replid}, "the lineage is read with the publish"
    ids = {o: await world.pool.fetchval("SELECT stream_id FROM outbox WHERE order_id = $1", o)
           for o in (lost, lost_too, kept, dead, awaited)}
    stream = world.keys.payout_stream("bank")
    # What the promoted replica holds: every entry but those it never received, and the
    # traces of the two that were handled before (a dead letter, an awaited payout).
    await world.redis.xdel(stream, ids[lost], ids[lost_too], ids[dead], ids[awaited])
    await world.redis.hset(world.keys.payout_dead_orders("bank"), dead, 1)
    await world.redis.zadd(world.keys.payout_awaiting("bank"), {awaited: 0})

    assert await relay.check_lineages() == 0, "same lineage: nothing to look at"
    relay.lineages["bank"] = other.lineages["bank"] = "before-the-failover"
    assert await relay.check_lineages() == 2
    assert await world.published_at(lost) is None and await world.published_at(lost_too) is None
    for held in (kept, dead, awaited):
        assert await world.published_at(held) is not None
    assert relay.lineages == {"bank": replid}
    # A second replica seeing the same change re-opens nothing twice.
    assert await other.check_lineages() == 0
    assert await world.publish() == 2
    assert await world.entries("bank", lost) == 1 and await world.entries("bank", kept) == 1
