"""Use cases of withdraw_svc: the withdraw page, confirm, order queries, payout
coordination and the gate. Background relays live in relay.py, the job in compensation.py."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc

from meshkit import paging, validate
from meshkit.background import sleep_or_stop
from meshkit.errors import (
    Code,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RateLimited,
    Unavailable,
)
from meshkit.four_eyes import direct_change_refused
from meshkit.logs import log_context
from meshkit.outage import OutageLog
from meshkit.streams import trace_fields
from withdraw_svc.coalesce import Coalescer
from withdraw_svc.domain import (
    GATE_FIELDS,
    MAX_ORDER_ID_LEN,
    MAX_PAYOUT_BATCH,
    MAX_REASON_LEN,
    MAX_TOKENS,
    ConfirmInput,
    FailureReason,
    GateConfig,
    GateDecision,
    Order,
    OrderState,
    apply_gate_mask,
    check_method,
    check_replay,
    evaluate_gate,
    failure_refusal,
    gate_mask,
    gate_refusal,
    insufficient_balance,
    validate_confirm,
    validate_gate,
    validate_order_id,
    validate_uid,
    version_mismatch,
)
from withdraw_svc.peers import (
    INSUFFICIENT_BALANCE,
    AccountClient,
    GatewayClient,
    GatewayPayout,
    Method,
    PeerError,
)
from withdraw_svc.repository import NewOrder, Repository
from withdraw_svc.settings import Settings
from withdraw_svc.streams import RedisPort

log = logging.getLogger(__name__)
_outages = OutageLog(log)

Clock = Callable[[], datetime]
T = TypeVar("T")
Wake = Callable[[], None]

RECENT_ORDERS = 5
LOCAL_METHODS_MAX = 100_000


def system_clock() -> datetime:
    return datetime.now(UTC)


def _failed_for_balance(order: Order) -> bool:
    return order.state is OrderState.FAILED and order.failure_reason == FailureReason.INSUFFICIENT_BALANCE


def new_order_id() -> str:
    return f"wd-{uuid.uuid4().hex}"


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


# ---------------------------------------------------------------------------------------
# Gate


class GateHolder:
    """The gate configuration in force on this replica, re-read from PostgreSQL every few
    seconds so a SetGate on any replica reaches all of them without a restart."""

    def __init__(self, repo: Repository, refresh_s: float, clock: Clock = system_clock) -> None:
        self.repo = repo
        self.refresh_s = refresh_s
        self.clock = clock
        self.config = GateConfig()

    async def load(self) -> GateConfig:
        self.config = await self.repo.load_gate()
        return self.config

    async def refresh_loop(self, stopping: asyncio.Event) -> None:
        while not await sleep_or_stop(stopping, self.refresh_s):
            try:
                await self.load()
            except Exception as exc:
                _outages.failed(exc, "gate refresh failed; keeping version %d", self.config.version)

    def evaluate(self, uid: int) -> GateDecision:
        return evaluate_gate(self.config, uid, self.clock())


class GateAdmin:
    def __init__(self, repo: Repository, gate: GateHolder, four_eyes: bool = True) -> None:
        self.repo = repo
        self.gate = gate
        self.four_eyes = four_eyes   # direct SetGate refused (meshkit/four_eyes.py)

    async def get(self, uid: int) -> tuple[GateConfig, GateDecision | None]:
        validate.in_range("uid", uid, 0, validate.INT64_MAX, reason="BAD_UID")  # 0: no user
        config = await self.gate.load()
        return config, (self.gate.evaluate(uid) if uid > 0 else None)

    async def set(
        self, patch: GateConfig, mask: Sequence[str], expected_version: int, actor: str, reason: str
    ) -> GateConfig:
        """Change the fields `mask` names to their values in `patch` (AIP-134), audited.
        Refused under four-eyes: the change goes through GateChanges instead."""
        if self.four_eyes:
            raise direct_change_refused("a gate change", "ProposeGateChange", "ApproveGateChange")
        validate.in_range("expected_version", expected_version, 0, validate.INT64_MAX, reason="BAD_VERSION")
        validate.text("reason", reason, max_len=MAX_REASON_LEN, multiline=True)
        names = gate_mask(mask)
        # Refuse a bad patch before taking the row lock; the merged result is judged again.
        if names == GATE_FIELDS:
            validate_gate(patch)
        return await self.update(
            lambda current: validate_gate(apply_gate_mask(current, patch, names)),
            expected_version, actor, reason,
        )

    async def update(
        self, build: Callable[[GateConfig], GateConfig], expected_version: int, actor: str, reason: str
    ) -> GateConfig:
        """One audited compare-and-set of the gate: SetGate's and the automatic release's."""
        stored = await self.repo.update_gate(build, expected_version, actor, reason, version_mismatch)
        self.gate.config = stored
        log.info("gate set to version %d by %s: %s (%s)", stored.version, actor, stored.to_json(), reason)
        return stored

    async def audit(
        self, page_size: int, page_token: str
    ) -> tuple[list[tuple[str, datetime, GateConfig | None, GateConfig, str]], str]:
        size = paging.PERSON_LIST.of(page_size)
        return await self.repo.gate_audit(size, paging.row_of(page_token))


# ---------------------------------------------------------------------------------------
# Withdraw page, confirm, queries


@dataclass(frozen=True)
class Page:
    balance_fen: int
    balance_stale: bool
    min_fen: int
    max_fen: int
    gate: GateDecision
    methods: list[Method]
    recent: list[Order]


def encode_page_token(order: Order) -> str:
    return paging.keyset_token(order.created_at, order.order_id)


def decode_page_token(token: str) -> tuple[datetime, str] | None:
    return paging.keyset_of(token, key_max_len=MAX_ORDER_ID_LEN)


class UserLimit(Protocol):
    """A per-user rate limit (meshkit.user_limits.UserRateLimit): raises RateLimited."""

    async def check(self, uid: int) -> None: ...


class WithdrawService:
    def __init__(
        self, settings: Settings, repo: Repository, redis: RedisPort, account: AccountClient,
        gateway: GatewayClient, gate: GateHolder, wake_relay: Wake, wake_refunds: Wake,
        confirm_limit: UserLimit | None = None,
    ) -> None:
        self.settings = settings
        self.confirm_limit = confirm_limit
        self.limits = settings.limits
        self.repo = repo
        self.redis = redis
        self.account = account
        self.gateway = gateway
        self.gate = gate
        self.wake_relay = wake_relay
        self.wake_refunds = wake_refunds
        # Bound methods per uid, in front of the Redis copy. Only hits are trusted: a method
        # missing here is looked up again, so a binding made a moment ago is never refused.
        self._local_methods: dict[int, tuple[float, list[Method]]] = {}
        self.inserts = Coalescer(repo.insert_orders, repo.insert_order,
                                 max_in_flight=settings.order_writes_in_flight)
        self.deducted: Coalescer[tuple[str, dict[str, Any]], Order | None] = Coalescer(
            repo.mark_deducted_many, lambda item: repo.mark_deducted(*item),
            max_in_flight=settings.order_writes_in_flight,
        )
        # Concurrent confirms' deducts share DeductBatch calls; each order keeps its own
        # result (and its own idempotency: the ledger's key is still the order id).
        self.deducts: Coalescer[tuple[str, int, int], PeerError | None] = Coalescer(
            account.deduct_many, account.deduct_one, max_batch=settings.deduct_batch,
            max_in_flight=settings.deduct_in_flight, linger_s=settings.deduct_linger_s,
        )

    # -- page ------------------------------------------------------------------------------

    async def page(self, uid: int, tokens: Sequence[str]) -> Page:
        validate_uid(uid)
        validate.count("tokens", tokens, MAX_TOKENS, reason="BAD_TOKENS")
        (balance, stale), methods, recent = await asyncio.gather(
            self._page_balance(uid, [t for t in tokens if t]),
            self._page_methods(uid),
            self.repo.list_orders(uid, RECENT_ORDERS),
        )
        return Page(balance, stale, self.limits.min_fen, self.limits.max_fen,
                    self.gate.evaluate(uid), methods, recent)

    async def _page_balance(self, uid: int, tokens: list[str]) -> tuple[int, bool]:
        """Weak dependency: credit and balance share one short budget; past it the page
        renders with a stale balance."""
        budget = self.settings.page_credit_deadline_s
        started = time.monotonic()
        if tokens:
            try:
                credit = await self.account.force_credit(uid, tokens, budget)
                return credit.balance_fen, False
            except PeerError as err:
                log.info("page: weak force-credit failed for uid %d: %s", uid, err)
        remaining = budget - (time.monotonic() - started)
        if remaining < 0.01:
            return 0, True
        try:
            return await self.account.balance(uid, remaining), False
        except PeerError as err:
            log.info("page: balance unavailable for uid %d: %s", uid, err)
            return 0, True

    async def _page_methods(self, uid: int) -> list[Method]:
        try:
            methods = await self.gateway.methods(uid, self.settings.page_credit_deadline_s)
        except PeerError as err:
            log.info("page: methods unavailable for uid %d: %s", uid, err)
            try:
                return await self.redis.cached_methods(uid) or []
            except Exception:
                return []
        await self._cache_methods(uid, methods)
        return methods

    def _remember_methods(self, uid: int, methods: list[Method]) -> None:
        if len(self._local_methods) >= LOCAL_METHODS_MAX:
            self._local_methods.pop(next(iter(self._local_methods)))  # oldest first
        self._local_methods[uid] = (time.monotonic() + self.settings.methods_cache_s, methods)

    async def _cache_methods(self, uid: int, methods: list[Method]) -> None:
        self._remember_methods(uid, methods)
        try:
            await self.redis.cache_methods(uid, methods, self.settings.methods_cache_s)
        except Exception:
            log.warning("could not cache methods of uid %d", uid, exc_info=True)

    # -- confirm ---------------------------------------------------------------------------

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
                channel = await self._channel_of(req.uid, req.method_id)
                if req.tokens:
                    await self._credit_strong(req.uid, req.tokens)
            except DomainError:
                existing = await self.repo.get_by_request(req.uid, req.request_id)
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
            existing = await self.repo.get_by_request(req.uid, req.request_id)
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

    async def _channel_of(self, uid: int, method_id: str) -> str:
        local = self._local_methods.get(uid)
        if local is not None and local[0] > time.monotonic():
            hit = next((m for m in local[1] if m.method_id == method_id), None)
            if hit is not None:
                return check_method(hit.channel, method_id, uid, self.limits)
        try:
            cached = await self.redis.cached_methods(uid)
        except Exception:
            cached = None
        hit = next((m for m in cached or [] if m.method_id == method_id), None)
        if hit is not None:
            self._remember_methods(uid, cached or [])
            return check_method(hit.channel, method_id, uid, self.limits)
        # Not cached (or not in the cached list: the user may have just bound it): ask.
        try:
            methods = await self.gateway.methods(uid)
        except PeerError as err:
            raise Unavailable(
                "checking the payout method failed; retry", reason="METHODS_UNAVAILABLE"
            ) from err
        await self._cache_methods(uid, methods)
        found = next((m for m in methods if m.method_id == method_id), None)
        return check_method(found.channel if found else None, method_id, uid, self.limits)

    async def _credit_strong(self, uid: int, tokens: Sequence[str]) -> None:
        try:
            await self.account.force_credit(uid, tokens, self.settings.confirm_credit_deadline_s)
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
            failed = await self.repo.fail_order(
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
        order = await self.repo.get_order(order_id)
        if order is None:
            raise RuntimeError(f"order {order_id} vanished")
        return order

    # -- queries ---------------------------------------------------------------------------

    async def get_order(self, order_id: str, owner: int | None) -> Order:
        """The order, if `owner` owns it (None: any owner, for services). Someone else's
        order is not found, word for word like a missing one, so ids cannot be probed."""
        validate_order_id(order_id)
        order = await self.repo.get_order(order_id, with_history=True)
        if order is None or (owner is not None and order.uid != owner):
            raise NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
        return order

    async def list_orders(self, uid: int, page_size: int, page_token: str) -> tuple[list[Order], str]:
        validate_uid(uid)
        size = paging.PERSON_LIST.of(page_size)
        after = decode_page_token(page_token)
        orders = await self.repo.list_orders(uid, size + 1, after)
        if len(orders) > size:
            return orders[:size], encode_page_token(orders[size - 1])
        return orders, ""


# ---------------------------------------------------------------------------------------
# Payout coordination (called by payout_svc)


class GatewayRecords(Protocol):
    """The gateway, asked about payouts (GatewayClient.query_many)."""

    async def query_many(self, order_ids: Sequence[str]) -> dict[str, GatewayPayout]: ...


class Coordination:
    """payout_svc's word settles an order SUCCEEDED; a FAILED settlement (which refunds)
    is accepted only once the gateway, asked here, says FAILED or has no record."""

    def __init__(self, repo: Repository, wake_refunds: Wake, gateway: GatewayRecords) -> None:
        self.repo = repo
        self.wake_refunds = wake_refunds
        self.gateway = gateway

    async def orders_of(self, order_ids: Sequence[str]) -> dict[str, Order]:
        """The orders named that exist (for a peer about to act on them)."""
        validate.count("order_ids", order_ids, MAX_PAYOUT_BATCH, reason="BATCH_TOO_LARGE")
        for order_id in order_ids:
            validate.identifier("order_ids", order_id)
        return await self.repo.get_orders(order_ids)

    async def _failures_refused(self, order_ids: Sequence[str]) -> dict[str, DomainError]:
        """One QueryPayouts for all of `order_ids` (declared FAILED): the ones the gateway
        does not confirm, with why. The gateway away refuses all of them as UNAVAILABLE
        (nothing changes; payout_svc tries again without spending an attempt)."""
        if not order_ids:
            return {}
        try:
            records = await self.gateway.query_many(order_ids)
        except PeerError as err:
            log.warning("cannot confirm %d payout failures with the gateway: %s", len(order_ids), err)
            away = Unavailable(f"the gateway could not be asked whether the payout failed ({err.code.name}); "
                               "retry", reason="GATEWAY_UNAVAILABLE")
            return dict.fromkeys(order_ids, away)
        refused: dict[str, DomainError] = {}
        for order_id in order_ids:
            refusal = failure_refusal(order_id, records[order_id].view)
            if refusal is not None:
                log.warning("refused a FAILED settlement: %s", refusal.message)
                refused[order_id] = refusal
        return refused

    async def begin_payout(self, order_id: str) -> tuple[Order, bool]:
        validate_order_id(order_id)
        with log_context(order_id=order_id):
            moved = await self.repo.transition(
                order_id, [OrderState.PENDING_PAYOUT], OrderState.PAYING, "payout started"
            )
            if moved is not None:
                return moved, True
            return await self._existing(order_id), False

    async def begin_payout_batch(self, order_ids: Sequence[str]) -> list[BeginOutcome]:
        """begin_payout for each order id: one UPDATE (one commit) for all, one read of the
        ones it did not move. A result per item, in order: (order, acquired) or the
        DomainError begin_payout would have raised. Only a call that cannot run at all (too
        many items, the database away) raises."""
        validate.count("order_ids", order_ids, MAX_PAYOUT_BATCH, reason="BATCH_TOO_LARGE")
        results: list[BeginOutcome | None] = [None] * len(order_ids)
        valid: list[str] = []
        for index, order_id in enumerate(order_ids):
            try:
                validate_order_id(order_id)
            except DomainError as exc:
                results[index] = exc
            else:
                valid.append(order_id)
        moved = await self.repo.begin_payouts(valid) if valid else {}
        unmoved = {o for o in valid if o not in moved}
        rest = await self.repo.get_orders(list(unmoved)) if unmoved else {}
        answered: set[str] = set()
        for index, order_id in enumerate(order_ids):
            if results[index] is not None:
                continue
            first = order_id not in answered
            answered.add(order_id)
            if order_id in moved:
                # A repeated id is a repeat of the first: it did not move the order itself.
                results[index] = (moved[order_id], first)
            elif order_id in rest:
                results[index] = (rest[order_id], False)
            else:
                results[index] = NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
        return [r for r in results if r is not None]

    async def settle_payout(
        self, order_id: str, result: OrderState | None, reason: str
    ) -> tuple[Order, bool]:
        """(order, replayed)."""
        _validate_settle(order_id, result, reason)
        assert result is not None
        with log_context(order_id=order_id):
            moved: Order | None
            if result is OrderState.FAILED:
                refused = await self._failures_refused([order_id])
                if order_id in refused:
                    raise refused[order_id]
            if result is OrderState.SUCCEEDED:
                moved = await self.repo.transition(
                    order_id, [OrderState.PAYING], OrderState.SUCCEEDED, "payout succeeded"
                )
            else:
                moved = await self.repo.fail_order(
                    order_id, [OrderState.PENDING_PAYOUT, OrderState.PAYING],
                    FailureReason.PAYOUT_FAILED, reason[:200],
                )
                if moved is not None:
                    self.wake_refunds()
            if moved is not None:
                return moved, False
            return _settle_replay(order_id, await self._existing(order_id), result), True

    async def settle_payout_batch(
        self, items: Sequence[tuple[str, OrderState | None, str]]
    ) -> list[SettleOutcome]:
        """settle_payout for each (order_id, result, reason): one UPDATE (one commit) for
        all, one read of the ones it did not move. A result per item, in order: (order,
        replayed) or the DomainError settle_payout would have raised. A repeated order id is
        judged against what the earlier item left, as sequential calls would be."""
        validate.count("settles", items, MAX_PAYOUT_BATCH, reason="BATCH_TOO_LARGE")
        results: list[SettleOutcome | None] = [None] * len(items)
        valid: list[int] = []
        for index, (order_id, result, reason) in enumerate(items):
            try:
                _validate_settle(order_id, result, reason)
            except DomainError as exc:
                results[index] = exc
            else:
                valid.append(index)
        refused = await self._failures_refused(list(dict.fromkeys(
            items[i][0] for i in valid if items[i][1] is OrderState.FAILED)))
        firsts: dict[str, tuple[str, OrderState, str]] = {}
        for index in valid:
            order_id, result, reason = items[index]
            assert result is not None
            if result is OrderState.FAILED and order_id in refused:
                # Refused as such: changes nothing, so a later item is judged without it.
                results[index] = refused[order_id]
                continue
            firsts.setdefault(order_id, (order_id, result, reason[:200]))
        moved = await self.repo.settle_payouts(list(firsts.values())) if firsts else {}
        if any(o.state is OrderState.FAILED for o in moved.values()):
            self.wake_refunds()
        unmoved = [o for o in firsts if o not in moved]
        rest = await self.repo.get_orders(unmoved) if unmoved else {}
        answered: set[str] = set()
        for index, (order_id, result, _reason) in enumerate(items):
            if results[index] is not None:
                continue
            assert result is not None
            current = moved.get(order_id) or rest.get(order_id)
            if order_id in moved and order_id not in answered:
                results[index] = (moved[order_id], False)
            elif current is None:
                results[index] = NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
            else:
                try:
                    results[index] = (_settle_replay(order_id, current, result), True)
                except DomainError as exc:
                    results[index] = exc
            answered.add(order_id)
        return [r for r in results if r is not None]

    async def _existing(self, order_id: str) -> Order:
        order = await self.repo.get_order(order_id)
        if order is None:
            raise NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
        return order


BeginOutcome = tuple[Order, bool] | DomainError
SettleOutcome = tuple[Order, bool] | DomainError


def _validate_settle(order_id: str, result: OrderState | None, reason: str) -> None:
    validate_order_id(order_id)
    if result not in (OrderState.SUCCEEDED, OrderState.FAILED):
        raise InvalidArgument("result: must be SUCCEEDED or FAILED", reason="BAD_RESULT")
    # Any length (the stored reason is cut at 200), but nothing PostgreSQL refuses.
    validate.text("reason", reason, max_len=None, multiline=True)


def _settle_replay(order_id: str, current: Order, result: OrderState) -> Order:
    """`current` when a settle to `result` that moved nothing is a replay; otherwise the
    refusal settle_payout answers."""
    if current.state is result:
        return current
    if current.state.terminal:
        raise FailedPrecondition(
            f"order {order_id} is {current.state} (terminal) and cannot become {result}",
            reason="ORDER_TERMINAL",
        )
    allowed = "PAYING" if result is OrderState.SUCCEEDED else "PENDING_PAYOUT or PAYING"
    raise FailedPrecondition(
        f"order {order_id} is {current.state}; only a {allowed} order can be settled {result}",
        reason="ORDER_NOT_PAYING",
    )
