"""In-memory fakes of withdraw_svc's own ports (withdraw_svc/ports.py), for unit tests of
its use cases: no sockets, no PostgreSQL, no Redis. The order store keeps the rules the
real one keeps (compare-and-set checked against the state machine, one order per
(uid, request_id), a refund job on entering a state that owes one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from withdraw_svc.domain import (
    GateDecision,
    GatewayView,
    Order,
    OrderState,
    RefundState,
    checked_sources,
    owes_refund,
)
from withdraw_svc.peers import INSUFFICIENT_BALANCE, CachedMethods, Credit, GatewayPayout, Method, PeerError
from withdraw_svc.records import NewOrder, PayoutJob, RefundJob, StuckCount
from withdraw_svc.settings import Settings

EPOCH = datetime(2026, 12, 1, tzinfo=UTC)


def withdraw_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("MESH_TLS_CA", "MESH_TLS_CERT", "MESH_TLS_KEY", "MESH_CERTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MESH_INSECURE", "1")
    monkeypatch.setenv("MESH_ENV", "dev")
    return Settings.from_env()


@dataclass
class Refund:
    done: bool = False
    outcome: str = ""


class FakeOrders:
    """ConfirmOrders, PayoutOrders and CompensationOrders over a dict."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.payout_jobs: dict[str, dict[str, Any]] = {}
        self.published: set[str] = set()
        self.refunds: dict[str, Refund] = {}
        self.requeued: list[str] = []
        self.inserts = 0
        self._clock = 0

    def _tick(self) -> datetime:
        self._clock += 1
        return EPOCH + timedelta(seconds=self._clock)

    def _with_refund(self, order: Order) -> Order:
        refund = self.refunds.get(order.order_id)
        if refund is None:
            return order
        return replace(order, refund_state=RefundState(refund.outcome if refund.done else "PENDING"))

    def _cas(
        self, order_id: str, sources: Sequence[str], to: OrderState, failure_reason: str = ""
    ) -> Order | None:
        order = self.orders.get(order_id)
        if order is None or order.state.value not in sources:
            return None
        moved = replace(order, state=to, failure_reason=failure_reason, updated_at=self._tick())
        self.orders[order_id] = moved
        if owes_refund(to):
            self.refunds.setdefault(order_id, Refund())
        return self._with_refund(moved)

    def put(self, order: Order) -> Order:
        self.orders[order.order_id] = order
        if owes_refund(order.state):
            self.refunds.setdefault(order.order_id, Refund())
        return order

    # -- reads ---------------------------------------------------------------------------

    async def get_order(self, order_id: str, *, with_history: bool = False) -> Order | None:
        order = self.orders.get(order_id)
        return self._with_refund(order) if order else None

    async def get_orders(self, order_ids: Sequence[str]) -> dict[str, Order]:
        return {o: self._with_refund(self.orders[o]) for o in order_ids if o in self.orders}

    async def get_by_request(self, uid: int, request_id: str) -> Order | None:
        found = [o for o in self.orders.values() if (o.uid, o.request_id) == (uid, request_id)]
        return self._with_refund(found[0]) if found else None

    async def list_orders(
        self, uid: int, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Order]:
        mine = sorted((o for o in self.orders.values() if o.uid == uid),
                      key=lambda o: o.created_at, reverse=True)
        return mine[:limit]

    # -- confirm -------------------------------------------------------------------------

    async def insert_order(self, new: NewOrder) -> Order | None:
        self.inserts += 1
        if await self.get_by_request(new.uid, new.request_id) is not None:
            return None
        at = self._tick()
        return self.put(Order(new.order_id, new.uid, new.request_id, new.amount_fen, new.channel,
                              new.method_id, OrderState.PENDING_DEDUCT, "", at, at))

    async def insert_orders(self, news: Sequence[NewOrder]) -> list[Order | None]:
        return [await self.insert_order(n) for n in news]

    async def mark_deducted(self, order_id: str, payout_payload: dict[str, Any]) -> Order | None:
        moved = self._cas(order_id, checked_sources([OrderState.PENDING_DEDUCT], OrderState.PENDING_PAYOUT),
                          OrderState.PENDING_PAYOUT)
        if moved is not None:
            self.payout_jobs.setdefault(order_id, payout_payload)
        return moved

    async def mark_deducted_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Order | None]:
        return [await self.mark_deducted(order_id, payload) for order_id, payload in items]

    # -- transitions ---------------------------------------------------------------------

    async def transition(
        self, order_id: str, from_states: Sequence[OrderState], to_state: OrderState, reason: str
    ) -> Order | None:
        assert not owes_refund(to_state), "the real repository refuses this: use fail_order"
        return self._cas(order_id, checked_sources(from_states, to_state), to_state)

    async def fail_order(
        self, order_id: str, from_states: Sequence[OrderState], failure_reason: str, detail: str = ""
    ) -> Order | None:
        return self._cas(order_id, checked_sources(from_states, OrderState.FAILED), OrderState.FAILED,
                         str(failure_reason))

    # -- compensation --------------------------------------------------------------------

    def _open(self) -> list[Order]:
        return sorted((o for o in self.orders.values() if not o.state.terminal),
                      key=lambda o: (o.created_at, o.order_id))

    async def open_orders_older_than(
        self, min_age_s: int, limit: int, after: tuple[datetime, str] | None
    ) -> list[Order]:
        rest = [o for o in self._open() if after is None or (o.created_at, o.order_id) > after]
        return rest[:limit]

    async def unconfirmed_deducts(self, min_age_s: int, limit: int) -> list[Order]:
        return [o for o in self._open() if o.state is OrderState.PENDING_DEDUCT][:limit]

    async def failed_unrefunded(self, min_age_s: int, limit: int) -> list[Order]:
        return [self._with_refund(self.orders[o]) for o, r in self.refunds.items() if not r.done][:limit]

    async def ensure_refund_jobs(self) -> int:
        missing = [o for o in self.orders.values() if owes_refund(o.state) and o.order_id not in self.refunds]
        for order in missing:
            self.refunds[order.order_id] = Refund()
        return len(missing)

    async def stuck_counts(self, bands_s: Sequence[int]) -> list[StuckCount]:
        return []

    async def payout_job(self, order_id: str) -> PayoutJob | None:
        if order_id not in self.payout_jobs:
            return None
        order = self.orders[order_id]
        return PayoutJob(order_id in self.published, order.state.terminal, "1-0")

    async def requeue_payout(self, order_id: str, state: OrderState) -> bool:
        if self.orders[order_id].state is not state:
            return False
        self.requeued.append(order_id)
        self.published.discard(order_id)
        return True

    async def refund_job(self, order_id: str) -> RefundJob | None:
        refund = self.refunds.get(order_id)
        return RefundJob(1, refund.done, refund.outcome, 0, "") if refund else None


class FakeLedger:
    """account_svc: balances per uid; `refusals` answer the next deducts in turn, before
    the ledger's own rules do."""

    def __init__(self, balances: dict[int, int] | None = None) -> None:
        self.balances = dict(balances or {})
        self.debits: dict[str, int] = {}
        self.refusals: list[PeerError] = []
        self.deducts = 0
        self.debit_lookup_fails = False

    async def force_credit(self, uid: int, tokens: Sequence[str], timeout_s: float) -> Credit:
        return Credit(self.balances.get(uid, 0))

    async def balance(self, uid: int, timeout_s: float) -> int:
        return self.balances.get(uid, 0)

    async def deduct_one(self, item: tuple[str, int, int]) -> PeerError | None:
        order_id, uid, amount = item
        self.deducts += 1
        if self.refusals:
            return self.refusals.pop(0)
        if order_id in self.debits:
            return None  # idempotent per order id
        if self.balances.get(uid, 0) < amount:
            return PeerError("account", grpc.StatusCode.FAILED_PRECONDITION,
                             f"insufficient balance for {amount} fen", reason=INSUFFICIENT_BALANCE)
        self.balances[uid] -= amount
        self.debits[order_id] = amount
        return None

    async def deduct_many(self, items: Sequence[tuple[str, int, int]]) -> list[PeerError | None]:
        return [await self.deduct_one(item) for item in items]

    async def debit_exists(self, order_id: str) -> bool:
        if self.debit_lookup_fails:
            raise PeerError("account", grpc.StatusCode.UNAVAILABLE, "ledger away")
        return order_id in self.debits


class FakeMethods:
    """The gateway's bound methods, its per-uid methods version, and the Redis copy
    (BoundMethodsSource, MethodsCache). `away` makes the gateway unreachable."""

    def __init__(self, bound: dict[int, list[Method]]) -> None:
        self.bound = bound
        self.versions: dict[int, int] = {}
        self.cache: dict[int, CachedMethods] = {}
        self.asked = 0
        self.away = False

    def bind(self, uid: int, method: Method) -> None:
        """As the gateway binds: the row, then the version bump."""
        self.bound.setdefault(uid, []).append(method)
        self.versions[uid] = self.versions.get(uid, 0) + 1

    async def methods(self, uid: int, timeout_s: float | None = None) -> list[Method]:
        self.asked += 1
        if self.away:
            raise PeerError("gateway", grpc.StatusCode.UNAVAILABLE, "gateway away")
        return list(self.bound.get(uid, []))

    async def methods_with_version(self, uid: int) -> tuple[str, CachedMethods | None]:
        return str(self.versions.get(uid, 0)), self.cache.get(uid)

    async def cache_methods(self, uid: int, methods: Sequence[Method], version: str, ttl_s: int) -> None:
        self.cache[uid] = CachedMethods(version, list(methods))


class FakeGate:
    def __init__(self, open_: bool = True) -> None:
        self.open = open_

    def evaluate(self, uid: int) -> GateDecision:
        if self.open:
            return GateDecision(True, "OPEN", "")
        return GateDecision(False, "CLOSED_WINDOW", "Withdrawals are closed until 10:00.")


class FakeGateway:
    """PayoutRecords: what the gateway says of each order (PeerError: it is away)."""

    def __init__(self, views: dict[str, GatewayPayout | PeerError] | None = None) -> None:
        self.views = dict(views or {})

    async def query(self, order_id: str) -> GatewayPayout:
        view = self.views.get(order_id)
        if isinstance(view, PeerError):
            raise view
        return view or GatewayPayout(GatewayView.NOT_FOUND)

    async def query_many(self, order_ids: Sequence[str]) -> dict[str, GatewayPayout]:
        return {o: await self.query(o) for o in order_ids}


class FakeLocks:
    """OrderLocks: held by someone else for the order ids in `held`."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.released: list[str] = []

    async def lock_order(self, order_id: str, ttl_ms: int) -> str | None:
        if order_id in self.held:
            return None
        self.held[order_id] = "token"
        return "token"

    async def unlock_order(self, order_id: str, token: str) -> None:
        if self.held.get(order_id) == token:
            del self.held[order_id]
            self.released.append(order_id)


class FakeRefunds:
    """RefundSettler: settles the refund jobs of the orders named, as the ledger would."""

    def __init__(self, orders: FakeOrders, ledger: FakeLedger) -> None:
        self.orders = orders
        self.ledger = ledger
        self.processed: list[str] = []

    async def process(self, order_ids: Sequence[str] | None = None) -> int:
        due = [o for o, r in self.orders.refunds.items()
               if not r.done and (order_ids is None or o in order_ids)]
        for order_id in due:
            refunded = self.ledger.debits.pop(order_id, None)
            if refunded is not None:
                uid = self.orders.orders[order_id].uid
                self.ledger.balances[uid] = self.ledger.balances.get(uid, 0) + refunded
            self.orders.refunds[order_id] = Refund(True, "REFUNDED" if refunded is not None else "VOIDED")
            self.processed.append(order_id)
        return len(due)


class FakeOutbox:
    """PayoutRequeue: which stream entries still wait, and whether it was nudged."""

    def __init__(self) -> None:
        self.waiting: set[str] = set()
        self.nudged = 0

    async def queued(self, channel: str, stream_id: str) -> bool:
        return stream_id in self.waiting

    def nudge(self) -> None:
        self.nudged += 1


class FakeJobLock:
    def __init__(self, free: bool = True) -> None:
        self.free = free

    @asynccontextmanager
    async def try_hold(self) -> AsyncIterator[bool]:
        yield self.free

