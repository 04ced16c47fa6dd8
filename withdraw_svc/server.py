"""Composition root of withdraw_svc."""

from __future__ import annotations

from pathlib import Path

import grpc

from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from mesh.withdraw.v1 import settings_pb2, settings_pb2_grpc, withdraw_pb2, withdraw_pb2_grpc
from meshkit.admin_store import ChangeStore
from meshkit.background import Background
from meshkit.feed_servicer import ChangeFeedServicer
from meshkit.leader import Lease, LeaseStore, led
from meshkit.settings import CommonSettings
from meshkit.stores import Stores
from meshkit.user_auth import UserAuth
from meshkit.user_limits import UserRateLimit
from withdraw_svc.admin_audit import WithdrawAudit
from withdraw_svc.auto_release import AutoRelease
from withdraw_svc.bound_methods import BoundMethods
from withdraw_svc.compensation import Compensation
from withdraw_svc.confirm import ConfirmWithdrawal
from withdraw_svc.coordination import PayoutCoordinator
from withdraw_svc.faults import FaultPlan
from withdraw_svc.gate import GateAdmin, GateHolder
from withdraw_svc.gate_changes import KIND, GateChanges
from withdraw_svc.order_queries import OrderQueries
from withdraw_svc.peers import AccountClient, GatewayClient, PayoutStatsClient
from withdraw_svc.relay import OutboxRelay, RefundRelay
from withdraw_svc.repository import Repository
from withdraw_svc.servicer import PayoutCoordinationServicer, WithdrawAdminServicer, WithdrawServicer
from withdraw_svc.settings import Settings
from withdraw_svc.settings_servicer import WithdrawSettingsServicer
from withdraw_svc.streams import RedisPort
from withdraw_svc.withdraw_page import WithdrawPage

MIGRATIONS = Path(__file__).parent / "migrations"
# The jobs one replica runs at a time (meshkit.leader): compensation per run, the others
# for as long as their replica holds them.
LEASES = ("withdraw-compensation", "withdraw-auto-release", "withdraw-stuck-orders")


class WithdrawApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.background = Background()

    async def start(self) -> None:
        s = self.settings
        self.stores = await Stores.open(s.common, MIGRATIONS, pool_size=s.db_pool_size)
        self.repo = Repository(self.stores.pool)
        self.redis = RedisPort(self.stores.redis, self.stores.keys)
        self.account = AccountClient(s.account_addr, s.common.tls, s.peer_deadline_s)
        self.gateway = GatewayClient(s.gateway_addr, s.common.tls, s.peer_deadline_s)
        self.payout_stats = PayoutStatsClient(s.payout_admin_addr, s.common.tls, s.peer_deadline_s)
        await self.repo.ensure_gate(s.default_gate)
        self.gate = GateHolder(self.repo, s.gate_refresh_s)
        await self.gate.load()
        self.outbox = OutboxRelay(s, self.repo, self.redis)
        await self.outbox.start()
        faults = FaultPlan.from_settings(s)
        self.refunds = RefundRelay(s, self.repo, self.account, before_refund=faults.before_refund)
        page_deadline_s = s.page_credit_deadline_s
        methods = BoundMethods(self.gateway, self.redis, s.limits, s.methods_cache_s, page_deadline_s)
        self.page = WithdrawPage(self.repo, self.account, methods, self.gate, s.limits, page_deadline_s)
        self.confirm = ConfirmWithdrawal(
            self.repo, self.account, methods, self.gate, s.limits, s.confirm_credit_deadline_s,
            wake_relay=self.outbox.nudge, wake_refunds=self.refunds.nudge,
            order_writes_in_flight=s.order_writes_in_flight, deduct_batch=s.deduct_batch,
            deduct_in_flight=s.deduct_in_flight, deduct_linger_s=s.deduct_linger_s,
            confirm_limit=UserRateLimit(self.stores.redis, self.stores.keys, "confirm",
                                        s.user_confirms_per_min, "withdrawals"),
        )
        self.queries = OrderQueries(self.repo)
        self.coordinator = PayoutCoordinator(self.repo, wake_refunds=self.refunds.nudge, gateway=self.gateway)
        self.admin = GateAdmin(self.repo, self.gate, four_eyes=s.four_eyes.required)
        self.gate_changes = GateChanges(self.admin, ChangeStore(self.stores.pool, KIND, s.four_eyes.ttl_s),
                                        self.repo)
        self.audit = WithdrawAudit(self.stores.pool)
        self.auto_release = AutoRelease(self.admin, self.payout_stats, s.auto_release_interval_s)
        # One runner across replicas for what must run once (ARCHITECTURE.md, "Replicas and
        # single-runner work"); the relays share their jobs by SKIP LOCKED instead.
        store = LeaseStore(self.stores.pool)
        self.leases = {name: Lease(store, name) for name in LEASES}
        self.compensation_lock = self.leases["withdraw-compensation"]
        self.compensation = Compensation(s, self.repo, self.redis, self.account, self.gateway, self.refunds,
                                         self.outbox, self.compensation_lock)

        self.background.spawn("gate-refresh", self.gate.refresh_loop)
        # Always running: auto_release is switched on and off in the gate config, at run time.
        self.background.spawn("auto-release", led(self.leases["withdraw-auto-release"],
                                                  self.auto_release.run))
        self.background.spawn("outbox-relay", self.outbox.run)
        self.background.spawn("refund-relay", self.refunds.run)
        self.background.spawn("stuck-orders", led(self.leases["withdraw-stuck-orders"],
                                                  self.compensation.stuck_loop))
        self.background.spawn("unconfirmed-deducts", self.compensation.deduct_resolve_loop)
        if s.compensation_enabled:
            self.background.spawn("compensation", self.compensation.loop)

    def register(self, server: grpc.aio.Server) -> list[str]:
        users = UserAuth(self.settings.session_keys)
        withdraw_pb2_grpc.add_WithdrawServiceServicer_to_server(
            WithdrawServicer(self.page, self.confirm, self.queries, users), server
        )
        withdraw_pb2_grpc.add_PayoutCoordinationServiceServicer_to_server(
            PayoutCoordinationServicer(self.coordinator), server
        )
        withdraw_pb2_grpc.add_WithdrawAdminServiceServicer_to_server(
            WithdrawAdminServicer(self.admin, self.compensation, self.gate_changes, self.audit), server
        )
        settings_pb2_grpc.add_WithdrawSettingsServiceServicer_to_server(
            WithdrawSettingsServicer(self.settings), server
        )
        feed_pb2_grpc.add_ChangeFeedServiceServicer_to_server(ChangeFeedServicer(self.stores.pool), server)
        services = withdraw_pb2.DESCRIPTOR.services_by_name
        return [
            services["WithdrawService"].full_name,
            services["PayoutCoordinationService"].full_name,
            services["WithdrawAdminService"].full_name,
            settings_pb2.DESCRIPTOR.services_by_name["WithdrawSettingsService"].full_name,
            feed_pb2.DESCRIPTOR.services_by_name["ChangeFeedService"].full_name,
        ]

    async def healthy(self) -> bool:
        return await self.stores.healthy()

    async def drain(self) -> None:
        await self.background.stop()

    async def close(self) -> None:
        await self.account.close()
        await self.gateway.close()
        await self.payout_stats.close()
        await self.stores.close()


def build() -> tuple[WithdrawApp, CommonSettings]:
    settings = Settings.from_env()
    return WithdrawApp(settings), settings.common
