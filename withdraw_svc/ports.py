"""The ports withdraw_svc's use cases depend on: what each needs of PostgreSQL, Redis
and its peers, as small Protocols. repository.py, streams.py and peers.py are the
adapters; tests/unit fakes these, never PostgreSQL or Redis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from withdraw_svc.domain import GateConfig, Order, OrderState
from withdraw_svc.peers import CachedMethods, Credit, GatewayPayout, Method, PeerError
from withdraw_svc.records import (
    GateAuditPage,
    InFlightJob,
    NewOrder,
    PayoutJob,
    PayoutRow,
    RefundJob,
    RefundRow,
    StuckCount,
)
from withdraw_svc.streams import InRedis, Published

Wake = Callable[[], None]
# One deduct as the ledger's batch takes it: (order_id, uid, amount_fen).
DeductItem = tuple[str, int, int]
# A PAYOUT job's payload handed to mark_deducted: (order_id, payload).
DeductedItem = tuple[str, dict[str, Any]]


# -- orders ---------------------------------------------------------------------------------


class OrderReads(Protocol):
    async def get_order(self, order_id: str, *, with_history: bool = False) -> Order | None: ...
    async def get_orders(self, order_ids: Sequence[str]) -> dict[str, Order]: ...
    async def get_by_request(self, uid: int, request_id: str) -> Order | None: ...
    async def list_orders(
        self, uid: int, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Order]: ...


class OrderTransitions(Protocol):
    """Every write is a compare-and-set checked against the state machine; None (or a
    missing key) when the order was not in a state it moves from."""

    async def transition(
        self, order_id: str, from_states: Sequence[OrderState], to_state: OrderState, reason: str
    ) -> Order | None: ...
    async def fail_order(
        self, order_id: str, from_states: Sequence[OrderState], failure_reason: str, detail: str = ""
    ) -> Order | None: ...


class ConfirmOrders(OrderReads, OrderTransitions, Protocol):
    """What confirm writes: the order, then its deduct (with its PAYOUT job) or its failure."""

    async def insert_order(self, new: NewOrder) -> Order | None: ...
    async def insert_orders(self, news: Sequence[NewOrder]) -> list[Order | None]: ...
    async def mark_deducted(self, order_id: str, payout_payload: dict[str, Any]) -> Order | None: ...
    async def mark_deducted_many(self, items: Sequence[DeductedItem]) -> list[Order | None]: ...


class PayoutOrders(OrderReads, OrderTransitions, Protocol):
    """What payout_svc's calls move: PENDING_PAYOUT -> PAYING -> SUCCEEDED or FAILED."""

    async def begin_payouts(self, order_ids: Sequence[str]) -> dict[str, Order]: ...
    async def settle_payouts(self, items: Sequence[tuple[str, OrderState, str]]) -> dict[str, Order]: ...


class CompensationOrders(OrderReads, OrderTransitions, Protocol):
    async def open_orders_older_than(
        self, min_age_s: int, limit: int, after: tuple[datetime, str] | None
    ) -> list[Order]: ...
    async def unconfirmed_deducts(self, min_age_s: int, limit: int) -> list[Order]: ...
    async def failed_unrefunded(self, min_age_s: int, limit: int) -> list[Order]: ...
    async def ensure_refund_jobs(self) -> int: ...
    async def stuck_counts(self, bands_s: Sequence[int]) -> list[StuckCount]: ...
    async def payout_job(self, order_id: str) -> PayoutJob | None: ...
    async def requeue_payout(self, order_id: str, state: OrderState) -> bool: ...
    async def refund_job(self, order_id: str) -> RefundJob | None: ...


# -- outbox ---------------------------------------------------------------------------------


class UnpublishedPayoutsPort(Protocol):
    jobs: list[PayoutRow]

    async def mark_published(self, stream_ids: Sequence[str]) -> None: ...


class PayoutOutbox(Protocol):
    def claim_unpublished(self, limit: int) -> AbstractAsyncContextManager[UnpublishedPayoutsPort]: ...
    async def republish_all_in_flight(self, batch: int = 5000) -> int: ...
    async def in_flight_jobs(
        self, older_than_s: int, below_cap: int, after: tuple[datetime, int] | None, limit: int,
    ) -> list[InFlightJob]: ...
    async def claim_republish(self, jobs: Sequence[InFlightJob], below_cap: int) -> int: ...
    async def reopen_lost(self, jobs: Sequence[InFlightJob]) -> int: ...


class ClaimedRefundsPort(Protocol):
    jobs: list[RefundRow]

    async def done(self, row: RefundRow, outcome: str) -> None: ...
    async def retry_after(self, row: RefundRow, error: str, backoff_s: float) -> None: ...


class RefundOutbox(Protocol):
    def claim_refunds(
        self, limit: int, order_ids: Sequence[str] | None
    ) -> AbstractAsyncContextManager[ClaimedRefundsPort]: ...


class PayoutStreams(Protocol):
    """The channel streams and the Redis epoch (streams.RedisPort)."""

    async def publish(self, rows: Sequence[PayoutRow]) -> Published: ...
    async def lineages(self, channels: Sequence[str]) -> dict[str, str]: ...
    async def still_held(self, jobs: Sequence[InFlightJob]) -> list[bool]: ...
    async def epoch(self) -> str | None: ...
    async def claim_epoch(self, token: str) -> str | None: ...
    async def in_redis(self, jobs: Sequence[InFlightJob], group: str) -> list[InRedis]: ...
    async def has_entry(self, channel: str, stream_id: str) -> bool: ...
    async def last_delivered(self, channel: str, group: str) -> tuple[int, int] | None: ...
    async def stream_exists(self, channel: str) -> bool: ...


class PayoutRequeue(Protocol):
    """The outbox relay, as the compensation job hands an unpaid order back to it."""

    async def queued(self, channel: str, stream_id: str) -> bool: ...
    def nudge(self) -> None: ...


class RefundSettler(Protocol):
    """The refund relay, as the compensation job settles the refunds it owes."""

    async def process(self, order_ids: Sequence[str] | None = None) -> int: ...


# -- gate -----------------------------------------------------------------------------------


class GateStore(Protocol):
    async def load_gate(self) -> GateConfig: ...
    async def update_gate(
        self, build: Callable[[GateConfig], GateConfig], expected_version: int, actor: str, reason: str,
    ) -> GateConfig: ...
    async def gate_audit(self, limit: int, before: int | None) -> GateAuditPage: ...


# -- Redis ----------------------------------------------------------------------------------


class MethodsCache(Protocol):
    """The Redis copy of each user's methods, tagged with the methods version (a counter the
    gateway bumps after each bind) read before the gateway was asked."""

    async def methods_with_version(self, uid: int) -> tuple[str, CachedMethods | None]: ...
    async def cache_methods(self, uid: int, methods: Sequence[Method], version: str, ttl_s: int) -> None: ...


class OrderLocks(Protocol):
    """The order lock payout_svc's workers take too."""

    async def lock_order(self, order_id: str, ttl_ms: int) -> str | None: ...
    async def unlock_order(self, order_id: str, token: str) -> None: ...


class JobLock(Protocol):
    """One holder across replicas: yields whether this caller holds it."""

    def try_hold(self) -> AbstractAsyncContextManager[bool]: ...


# -- peers ----------------------------------------------------------------------------------


class Ledger(Protocol):
    """account_svc, as confirm and the withdraw page use it."""

    async def force_credit(self, uid: int, tokens: Sequence[str], timeout_s: float) -> Credit: ...
    async def balance(self, uid: int, timeout_s: float) -> int: ...
    async def deduct_one(self, item: DeductItem) -> PeerError | None: ...
    async def deduct_many(self, items: Sequence[DeductItem]) -> list[PeerError | None]: ...


class LedgerRecords(Protocol):
    async def debit_exists(self, order_id: str) -> bool: ...


class LedgerRefunds(Protocol):
    async def refund(self, order_id: str) -> str: ...


class BoundMethodsSource(Protocol):
    """The gateway, asked which payout methods a user has bound."""

    async def methods(self, uid: int, timeout_s: float | None = None) -> list[Method]: ...


class PayoutRecords(Protocol):
    """The gateway, asked about payouts."""

    async def query(self, order_id: str) -> GatewayPayout: ...
    async def query_many(self, order_ids: Sequence[str]) -> dict[str, GatewayPayout]: ...

