"""Confirm a withdrawal: validation, idempotency, gate, method, credit, the order, its
deduct. The payout itself is queued through the outbox, never run here."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import grpc

from meshkit.errors import (
    Code,
    DomainError,
    FailedPrecondition,
    RateLimited,
    Unavailable,
)
from meshkit.logs import log_context
from meshkit.streams import trace_fields
from withdraw_svc.bound_methods import BoundMethods
from withdraw_svc.coalesce import Coalescer
from withdraw_svc.domain import (
    ConfirmInput,
    FailureReason,
    GateDecision,
    Limits,
    Order,
    OrderState,
    check_replay,
    gate_refusal,
    insufficient_balance,
    validate_confirm,
)
from withdraw_svc.peers import INSUFFICIENT_BALANCE, PeerError
from withdraw_svc.ports import ConfirmOrders, DeductedItem, DeductItem, Ledger, Wake
from withdraw_svc.records import NewOrder

log = logging.getLogger(__name__)

T = TypeVar("T")


class UserLimit(Protocol):
    """A per-user rate limit (meshkit.user_limits.UserRateLimit): raises RateLimited."""

    async def check(self, uid: int) -> None: ...


class Gate(Protocol):
    def evaluate(self, uid: int) -> GateDecision: ...


def new_order_id() -> str:
    return f"wd-{uuid.uuid4().hex}"


def _failed_for_balance(order: Order) -> bool:
    return order.state is OrderState.FAILED and order.failure_reason == FailureReason.INSUFFICIENT_BALANCE


_unfinished: set[asyncio.Task[Any]] = set()


def _done(task: asyncio.Task[Any]) -> None:
    _unfinished.discard(task)


def _log_abandoned(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # Nobody waits for an abandoned confirm any more: its failure is only logged.
        log.warning("a confirm abandoned by its caller ended with %r", task.exception())


async def finish_even_if_abandoned(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end even when the awaiting RPC is cancelled: the cancellation
    reaches the caller, not the work (which keeps a strong reference until done)."""
    task = asyncio.ensure_future(work)
    _unfinished.add(task)
    task.add_done_callback(_done)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log_abandoned)
        raise


class ConfirmWithdrawal:
    def __init__(
        self, orders: ConfirmOrders, account: Ledger, methods: BoundMethods, gate: Gate, limits: Limits,
        credit_deadline_s: float, wake_relay: Wake, wake_refunds: Wake, *,
        order_writes_in_flight: int, deduct_batch: int, deduct_in_flight: int, deduct_linger_s: float,
        confirm_limit: UserLimit | None = None,
    ) -> None:
        self.orders = orders
        self.account = account
        self.methods = methods
        self.gate = gate
        self.limits = limits
        self.credit_deadline_s = credit_deadline_s
        self.wake_relay = wake_relay
        self.wake_refunds = wake_refunds
        self.confirm_limit = confirm_limit
        self.inserts = Coalescer(orders.insert_orders, orders.insert_order,
                                 max_in_flight=order_writes_in_flight)
        self.deducted: Coalescer[DeductedItem, Order | None] = Coalescer(
            orders.mark_deducted_many, lambda item: orders.mark_deducted(*item),
            max_in_flight=order_writes_in_flight,
        )
        # Concurrent confirms' deducts share DeductBatch calls; each order keeps its own
        # result (and its own idempotency: the ledger's key is still the order id).
        self.deducts: Coalescer[DeductItem, PeerError | None] = Coalescer(
            account.deduct_many, account.deduct_one, max_batch=deduct_batch,
            max_in_flight=deduct_in_flight, linger_s=deduct_linger_s,
        )

    async def confirm(self, req: ConfirmInput) -> tuple[Order, bool]:
        """(order, replayed). Validation, then idempotency, then gate, method, credit, order,
        deduct; the payout itself is queued through the outbox, never run here.

        The idempotency lookup is folded into the insert (ON CONFLICT DO NOTHING) to save a
        round trip; every refusal before it looks for an earlier order first, so a repeat
        is answered with its order even when the gate has closed since."""
        validate_confirm(req, self.limits)
        with log_context(uid=req.uid):
            if self.confirm_limit is not None:
                # Before anything is read or written: a refused confirm changes nothing.
                await self.confirm_limit.check(req.uid)
            try:
                decision = self.gate.evaluate(req.uid)
                if not decision.open:
                    raise gate_refusal(decision)
                channel = await self.methods.channel_of(req.uid, req.method_id)
                if req.tokens:
                    await self._credit_strong(req.uid, req.tokens)
            except DomainError:
                existing = await self.orders.get_by_request(req.uid, req.request_id)
                if existing is None:
                    raise
                return await self._replay(existing, req), True
            # From the insert on, the order exists: a caller that gives up (deadline, cancel)
            # must not leave it half-done in PENDING_DEDUCT with its debit possibly landed.
            return await finish_even_if_abandoned(self._place(req, channel))

    async def _place(self, req: ConfirmInput, channel: str) -> tuple[Order, bool]:
        order = await self.inserts.submit(NewOrder(
            new_order_id(), req.uid, req.request_id, req.amount_fen, channel, req.method_id,
        ))
        if order is None:
            # The request_id was used before (or by a concurrent twin of this request).
            existing = await self.orders.get_by_request(req.uid, req.request_id)
            if existing is None:
                raise RuntimeError("order vanished after a unique conflict")
            return await self._replay(existing, req), True
        return await self._deduct(order), False

    async def _replay(self, existing: Order, req: ConfirmInput) -> Order:
        check_replay(existing, req)
        if existing.state is OrderState.PENDING_DEDUCT:
            # The first attempt did not learn the deduct's outcome: drive it again (the
            # ledger is idempotent per order id).
            return await self._deduct(existing)
        if _failed_for_balance(existing):
            raise insufficient_balance()
        return existing

    async def _credit_strong(self, uid: int, tokens: Sequence[str]) -> None:
        try:
            await self.account.force_credit(uid, tokens, self.credit_deadline_s)
        except PeerError as err:
            if err.code is grpc.StatusCode.RESOURCE_EXHAUSTED and err.retry_after_ms:
                # The ledger's per-user limit on forced credits: the user waits, not retries now.
                raise RateLimited(f"tokens: {err.message}", retry_after_ms=err.retry_after_ms) from err
            if err.definitive:
                # The ledger refused a token (forged, expired, someone else's...): say why.
                code = Code.__members__.get(err.code.name, Code.INVALID_ARGUMENT)
                raise DomainError(f"tokens: {err.message}", reason="TOKEN_REFUSED", code=code) from err
            raise Unavailable("crediting rewards failed, retry", reason="CREDIT_FAILED") from err

    async def _deduct(self, order: Order) -> Order:
        with log_context(order_id=order.order_id, uid=order.uid):
            refused = await self.deducts.submit((order.order_id, order.uid, order.amount_fen))
            if refused is not None:
                return await self._deduct_refused(order, refused)
            payload = {
                "uid": order.uid, "channel": order.channel, "method_id": order.method_id,
                "amount_fen": order.amount_fen, **trace_fields(),
            }
            moved = await self.deducted.submit((order.order_id, payload))
            if moved is None:
                # A concurrent retry (or the compensation job) moved it first.
                return await self._current(order.order_id)
            self.wake_relay()
            return moved

    async def _deduct_refused(self, order: Order, err: PeerError) -> Order:
        if not err.definitive:
            log.warning("deduct outcome unknown: %s", err)
            raise Unavailable(
                "deducting the order did not complete; retry with the same request_id",
                reason="DEDUCT_UNKNOWN",
            ) from err
        if err.code is grpc.StatusCode.FAILED_PRECONDITION:
            reason = (FailureReason.INSUFFICIENT_BALANCE if err.reason == INSUFFICIENT_BALANCE
                      else FailureReason.DEDUCT_REFUSED)
            failed = await self.orders.fail_order(
                order.order_id, [OrderState.PENDING_DEDUCT], reason, err.message
            )
            if failed is not None:
                self.wake_refunds()
                if reason is FailureReason.INSUFFICIENT_BALANCE:
                    raise insufficient_balance() from err
                raise FailedPrecondition(f"deduct refused: {err.message}", reason="DEDUCT_REFUSED") from err
        current = await self._current(order.order_id)
        if current.state is not OrderState.PENDING_DEDUCT:
            if _failed_for_balance(current):
                raise insufficient_balance() from err
            return current
        raise RuntimeError(f"ledger refused the deduct of {order.order_id}: {err}") from err

    async def _current(self, order_id: str) -> Order:
        order = await self.orders.get_order(order_id)
        if order is None:
            raise RuntimeError(f"order {order_id} vanished")
        return order
