"""Wiring of gateway_mock: stores, servicers, the async-completion sweeper."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import grpc

from gateway_mock.method_events import RedisMethodEvents
from gateway_mock.repository import PgGatewayStore
from gateway_mock.service import GatewayService
from gateway_mock.servicer import GatewayAdminServicer, GatewayServicer
from gateway_mock.settings import Settings
from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from meshkit.background import Background, sleep_or_stop
from meshkit.feed_servicer import ChangeFeedServicer
from meshkit.settings import CommonSettings
from meshkit.stores import Stores

log = logging.getLogger(__name__)


class GatewayApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores: Stores | None = None
        self.service: GatewayService | None = None
        self.background = Background()

    async def start(self) -> None:
        self.stores = await Stores.open(self.settings.common, Path(__file__).parent / "migrations",
                                        pool_size=self.settings.db_pool_size)
        rng = random.Random(self.settings.random_seed or None)
        self.service = GatewayService(PgGatewayStore(self.stores.pool), self.settings.channels, rng,
                                      method_events=RedisMethodEvents(self.stores.redis, self.stores.keys))
        await self.service.load_faults()
        self.background.spawn("gateway-async-sweeper", self._sweep)
        self.background.spawn("gateway-faults-refresh", self._refresh_faults)

    def register(self, server: grpc.aio.Server) -> list[str]:
        assert self.service is not None and self.stores is not None
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(self.service), server)
        gateway_pb2_grpc.add_GatewayAdminServiceServicer_to_server(GatewayAdminServicer(self.service), server)
        feed_pb2_grpc.add_ChangeFeedServiceServicer_to_server(ChangeFeedServicer(self.stores.pool), server)
        return [
            gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
            gateway_pb2.DESCRIPTOR.services_by_name["GatewayAdminService"].full_name,
            feed_pb2.DESCRIPTOR.services_by_name["ChangeFeedService"].full_name,
        ]

    async def healthy(self) -> bool:
        return self.stores is not None and await self.stores.healthy()

    async def drain(self) -> None:
        await self.background.stop()

    async def close(self) -> None:
        if self.stores is not None:
            await self.stores.close()

    async def _sweep(self, stopping: asyncio.Event) -> None:
        assert self.service is not None
        while not await sleep_or_stop(stopping, self.settings.sweep_interval_s):
            done = await self.service.complete_due()
            if done:
                log.info("completed %d asynchronous payouts", done)

    async def _refresh_faults(self, stopping: asyncio.Event) -> None:
        assert self.service is not None
        while not await sleep_or_stop(stopping, self.settings.faults_refresh_s):
            await self.service.load_faults()


def build() -> tuple[GatewayApp, CommonSettings]:
    settings = Settings.from_env()
    return GatewayApp(settings), settings.common
