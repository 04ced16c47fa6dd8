"""Wiring of account_svc: stores, the ledger, its servicers and the bulk credit loops."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from account_svc.consumer import BulkCreditor
from account_svc.peers import OrderStates
from account_svc.repository import ENTRY_FEED, PgLedgerStore
from account_svc.service import Ledger
from account_svc.servicer import AccountServicer
from account_svc.settings import Settings
from account_svc.streams import IngestStream
from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from meshkit.background import Background
from meshkit.feed_servicer import ChangeFeedServicer
from meshkit.settings import CommonSettings
from meshkit.stores import Stores
from meshkit.user_auth import UserAuth
from meshkit.user_limits import UserRateLimit

log = logging.getLogger(__name__)


class AccountApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores: Stores | None = None
        self.ledger: Ledger | None = None
        self.creditors: list[BulkCreditor] = []
        self.orders: OrderStates | None = None
        self.background = Background()

    async def start(self) -> None:
        s = self.settings
        self.stores = await Stores.open(s.common, Path(__file__).parent / "migrations", pool_size=s.pool_size)
        if s.refund_checks_order:
            self.orders = OrderStates(s.withdraw_addr, s.common.tls, s.peer_deadline_s)
        credit_limit = UserRateLimit(self.stores.redis, self.stores.keys, "credit",
                                     s.user_credits_per_min, "forced credits")
        self.ledger = Ledger(PgLedgerStore(self.stores.pool), s.token_keys, s.token_max_age_s,
                             orders=self.orders, credit_limit=credit_limit)
        for index in range(s.credit_workers):
            stream = IngestStream(self.stores.redis, self.stores.keys, f"{s.consumer_name}-{index}",
                                  partitions=s.credit_partitions)
            creditor = BulkCreditor(
                self.ledger, stream, batch=s.credit_batch, block_ms=s.credit_block_ms,
                claim_idle_ms=s.credit_claim_idle_ms, writers=s.credit_writers, trim=index == 0,
            )
            self.creditors.append(creditor)
            self.background.spawn(f"bulk-credit-{index}", creditor.run)

    def register(self, server: grpc.aio.Server) -> list[str]:
        assert self.ledger is not None and self.stores is not None
        users = UserAuth(self.settings.session_keys)
        account_pb2_grpc.add_AccountServiceServicer_to_server(AccountServicer(self.ledger, users), server)
        feed_pb2_grpc.add_ChangeFeedServiceServicer_to_server(
            ChangeFeedServicer(self.stores.pool, ENTRY_FEED), server)
        return [
            account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
            feed_pb2.DESCRIPTOR.services_by_name["ChangeFeedService"].full_name,
        ]

    async def healthy(self) -> bool:
        return self.stores is not None and await self.stores.healthy()

    async def drain(self) -> None:
        await self.background.stop()

    async def close(self) -> None:
        if self.orders is not None:
            await self.orders.close()
        if self.stores is not None:
            await self.stores.close()


def build() -> tuple[AccountApp, CommonSettings]:
    settings = Settings.from_env()
    return AccountApp(settings), settings.common
