"""Wiring of payout_svc: stores, peers, the per-channel loops and the admin servicer."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import redis.asyncio as redis

from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from meshkit.admin_store import ChangeStore, PoolAudit
from meshkit.background import Background
from meshkit.feed_servicer import ChangeFeedServicer
from meshkit.order_locks import OrderLocks
from meshkit.redis_client import open_redis
from meshkit.settings import CommonSettings
from meshkit.stores import Stores
from meshkit.transport import dial
from payout_svc.batch import BatchPayoutProcessor
from payout_svc.clients import GatewayClient, WithdrawClient
from payout_svc.metrics import ChannelSampler
from payout_svc.rate_changes import KIND as RATE_KIND
from payout_svc.rate_changes import RateChanges
from payout_svc.rate_limiter import RateLimiter
from payout_svc.repository import RatesRepository
from payout_svc.service import AwaitingChecker, ChannelRates, PayoutAdmin, ProcessorConfig
from payout_svc.servicer import PayoutAdminServicer
from payout_svc.settings import Settings
from payout_svc.streams import ChannelQueue
from payout_svc.worker import ChannelWorkers, refresh_rates

log = logging.getLogger(__name__)


class PayoutApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.background = Background()
        self.stores: Stores | None = None
        self.admin: PayoutAdmin | None = None
        self.rate_changes: RateChanges | None = None
        self.audit: PoolAudit | None = None
        self.reader: redis.Redis | None = None
        self._channels: list[grpc.aio.Channel] = []

    async def start(self) -> None:
        s = self.settings
        self.stores = await Stores.open(s.common, Path(__file__).parent / "migrations",
                                        pool_size=s.db_pool_size)
        withdraw = dial(s.withdraw_addr, s.common.tls, caller="payout_svc")
        gateway = dial(s.gateway_addr, s.common.tls, caller="payout_svc")
        self._channels = [withdraw, gateway]

        rates_repo = RatesRepository(self.stores.pool)
        rates = ChannelRates(rates_repo, s.channels, s.default_rates)
        await rates.start()
        self.reader = open_redis(
            s.common.redis_url, socket_timeout=5, socket_connect_timeout=2,
            max_connections=len(s.channels) * s.workers_per_channel + 2)
        # Answering before the workers start; a cluster client learns the slots here, once.
        await self.reader.ping()
        queue = ChannelQueue(self.stores.redis, self.stores.keys, s.group, s.consumer, reader=self.reader)
        for channel in s.channels:
            await queue.ensure(channel)
        limiter = RateLimiter(self.stores.redis, self.stores.keys, s.rate_margin_ms)
        locks = OrderLocks(self.stores.redis, self.stores.keys, s.lock_ttl_ms)
        config = ProcessorConfig(
            max_attempts=s.max_attempts, retry_backoff_ms=s.retry_backoff_ms,
            busy_backoff_ms=s.busy_backoff_ms, await_poll_ms=s.await_poll_ms,
            keepalive_s=min(s.lock_ttl_ms, s.claim_idle_ms) / 3000.0,
        )
        orders = WithdrawClient(withdraw, s.withdraw_timeout_s)
        payouts = GatewayClient(gateway, s.gateway_timeout_s)
        processor = BatchPayoutProcessor(orders, payouts, queue, limiter, locks, rates, config,
                                         self.background.stopping)
        checker = AwaitingChecker(orders, payouts, queue, locks, config)
        for channel in s.channels:
            loops = ChannelWorkers(channel, s.workers_per_channel, queue, processor, checker,
                                   s.claim_idle_ms, lease_ms=max(5_000, 2 * s.await_poll_ms),
                                   batch_size=s.batch_size, linger_ms=s.batch_linger_ms)
            for n in range(s.workers_per_channel):
                self.background.spawn(f"payout-{channel}-worker-{n}", loops.work)
            self.background.spawn(f"payout-{channel}-reclaim", loops.reclaim)
            self.background.spawn(f"payout-{channel}-awaiting", loops.follow_awaiting)
        self.background.spawn("payout-rates",
                              lambda stopping: refresh_rates(rates, s.rate_refresh_s, stopping))
        self.audit = PoolAudit(self.stores.pool)
        self.admin = PayoutAdmin(queue, queue.dead_letters, limiter, rates, self.audit,
                                 four_eyes=s.four_eyes.required)
        self.rate_changes = RateChanges(self.admin, rates_repo,
                                        ChangeStore(self.stores.pool, RATE_KIND, s.four_eyes.ttl_s))
        sampler = ChannelSampler(self.admin, s.common.key_prefix, s.metrics_interval_s)
        self.background.spawn("payout-metrics", sampler.run)
        log.info("payout consumer %s on channels %s", s.consumer, ",".join(s.channels))

    def register(self, server: grpc.aio.Server) -> list[str]:
        assert self.admin is not None and self.stores is not None
        assert self.rate_changes is not None and self.audit is not None
        payout_pb2_grpc.add_PayoutAdminServiceServicer_to_server(
            PayoutAdminServicer(self.admin, self.rate_changes, self.audit), server)
        feed_pb2_grpc.add_ChangeFeedServiceServicer_to_server(ChangeFeedServicer(self.stores.pool), server)
        return [
            payout_pb2.DESCRIPTOR.services_by_name["PayoutAdminService"].full_name,
            feed_pb2.DESCRIPTOR.services_by_name["ChangeFeedService"].full_name,
        ]

    async def healthy(self) -> bool:
        return self.stores is not None and await self.stores.healthy()

    async def drain(self) -> None:
        await self.background.stop(timeout=self.settings.common.grace_seconds)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        if self.reader is not None:
            await self.reader.aclose()
        if self.stores is not None:
            await self.stores.close()


def build() -> tuple[PayoutApp, CommonSettings]:
    settings = Settings.from_env()
    return PayoutApp(settings), settings.common
