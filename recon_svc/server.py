"""Wiring of recon_svc: stores, peer clients, servicers, and the background loops."""

from __future__ import annotations

import functools
from pathlib import Path

import grpc

from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from meshkit.background import Background
from meshkit.leader import Lease, LeaseStore, led
from meshkit.settings import CommonSettings
from meshkit.stores import Stores
from recon_svc.alerts import Alerts
from recon_svc.daily import DailyRecon
from recon_svc.peers import FeedClient, GatewayClient, LedgerClient, OrdersClient
from recon_svc.service import ReconService
from recon_svc.servicer import ReconServicer
from recon_svc.settings import Settings
from recon_svc.store.unit_of_work import PgStore
from recon_svc.workers import FeedFollower, audit_loop, checker_loop, self_check_loop


class ReconApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores: Stores | None = None
        self.service: ReconService | None = None
        self.daily: DailyRecon | None = None
        self.feeds: list[FeedClient] = []
        self.peers: list[LedgerClient | GatewayClient | OrdersClient] = []
        self.alerts = Alerts(settings.webhook_url, settings.webhook_timeout_s)
        self.background = Background()
        # One per feed: the replica holding it follows that feed (meshkit.leader).
        self.leases: dict[str, Lease] = {}

    async def start(self) -> None:
        s = self.settings
        self.stores = await Stores.open(s.common, Path(__file__).parent / "migrations",
                                        pool_size=s.db_pool_size)
        store = PgStore(self.stores.pool)
        tls, timeout = s.common.tls, s.rpc_timeout_s
        ledger = LedgerClient(s.account_addr, tls, timeout)
        gateway = GatewayClient(s.gateway_addr, tls, timeout)
        orders = OrdersClient(s.withdraw_addr, tls, timeout)
        self.peers = [ledger, gateway, orders]
        self.service = ReconService(store, s, self.alerts, ledger, gateway, orders)
        self.daily = DailyRecon(store, s, self.alerts,
                                runner=Lease(LeaseStore(self.stores.pool), "recon-daily"))
        await self.service.ensure_feeds()
        # A feed is followed by one replica at a time, each feed its own lease (so replicas
        # split the feeds); the checks, self-checks and audits are shared by SKIP LOCKED.
        leases = LeaseStore(self.stores.pool)
        for name, address in s.feeds:
            client = FeedClient(name, address, tls, timeout)
            self.feeds.append(client)
            follower = FeedFollower(self.service, client, s.poll_s, s.idle_poll_s, s.page_size)
            lease = self.leases[name] = Lease(leases, f"recon-feed-{name}")
            self.background.spawn(f"recon-feed-{name}", led(lease, follower.run))
        self.background.spawn("recon-checker", functools.partial(checker_loop, self.service))
        if s.self_check:
            self.background.spawn("recon-self-check", functools.partial(self_check_loop, self.service))
        self.background.spawn("recon-audit", functools.partial(audit_loop, self.service))

    def register(self, server: grpc.aio.Server) -> list[str]:
        assert self.service is not None and self.daily is not None
        recon_pb2_grpc.add_ReconServiceServicer_to_server(ReconServicer(self.service, self.daily), server)
        return [recon_pb2.DESCRIPTOR.services_by_name["ReconService"].full_name]

    async def healthy(self) -> bool:
        return self.stores is not None and await self.stores.healthy()

    async def drain(self) -> None:
        await self.background.stop()
        await self.alerts.close()

    async def close(self) -> None:
        for client in self.feeds:
            await client.close()
        for peer in self.peers:
            await peer.close()
        if self.stores is not None:
            await self.stores.close()


def build() -> tuple[ReconApp, CommonSettings]:
    settings = Settings.from_env()
    return ReconApp(settings), settings.common
