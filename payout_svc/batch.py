"""A worker's batch of stream messages paid together: one lock round trip, one
BeginPayoutBatch, one limiter call per grant, one gateway PayoutBatch per grant, one
SettlePayoutBatch and one XACK, while every order keeps the rules of PayoutProcessor (its
own compare-and-set, idempotency, attempts and outcome). What is rare (an order already
PAYING, a refusal, an unknown outcome, a lost reply) goes through PayoutProcessor's own
per-order code."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Protocol

from opentelemetry.trace import Link, SpanKind, get_current_span

from meshkit.outage import outage_of
from meshkit.streams import context_of
from meshkit.telemetry import tracer
from payout_svc.domain import (
    AttemptFailed,
    Begun,
    ChannelPaused,
    ChannelRate,
    Delivery,
    DependencyDown,
    GatewayAnswer,
    GatewayStatus,
    Handled,
    Job,
    Order,
    OrderMissing,
    OrderState,
    SettleConflict,
    settle_result,
)
from payout_svc.service import (
    RATE_RECHECK_S,
    GatewayPort,
    LimiterPort,
    LockPort,
    OrdersPort,
    PaymentLease,
    PayoutProcessor,
    ProcessorConfig,
    QueuePort,
    RatesPort,
    Sleep,
    count_gateway_call,
    count_handled,
)

log = logging.getLogger(__name__)
_tracer = tracer("payout_svc")


class BatchOrdersPort(OrdersPort, Protocol):
    async def begin_payout_batch(self, order_ids: list[str]) -> list[Begun | Exception]: ...
    async def settle_payout_batch(
        self, items: list[tuple[str, OrderState, str]]) -> list[Order | Exception]: ...


class BatchGatewayPort(GatewayPort, Protocol):
    async def payout_batch(self, orders: list[Order]) -> list[GatewayAnswer]: ...


class BatchQueuePort(QueuePort, Protocol):
    async def ack_many(self, channel: str, deliveries: list[Delivery]) -> None: ...
    async def touch_many(self, channel: str, deliveries: list[Delivery]) -> None: ...


class BatchLimiterPort(LimiterPort, Protocol):
    async def take(self, channel: str, rate: ChannelRate, wanted: int) -> tuple[int, float]: ...


class BatchLockPort(LockPort, Protocol):
    async def acquire_many(self, order_ids: list[str]) -> dict[str, str]: ...
    async def release_many(self, held: dict[str, str]) -> None: ...
    async def extend_many(self, held: dict[str, str]) -> None: ...


class BatchPaymentLease(PaymentLease):
    """PaymentLease for a batch: the locks of its orders and the messages still in hand, kept
    alive in one round trip each."""

    def __init__(self, locks: BatchLockPort, queue: BatchQueuePort, channel: str, held: dict[str, str],
                 in_hand: dict[str, Delivery], every_s: float, sleep: Sleep) -> None:
        super().__init__(locks, queue, None, "", "", every_s, sleep)
        self.batch_locks, self.batch_queue, self.channel = locks, queue, channel
        self.held, self.in_hand = held, in_hand

    async def refresh(self) -> None:
        if time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        await self.batch_locks.extend_many(self.held)
        await self.batch_queue.touch_many(self.channel, list(self.in_hand.values()))


class BatchPayoutProcessor(PayoutProcessor):
    def __init__(self, orders: BatchOrdersPort, gateway: BatchGatewayPort, queue: BatchQueuePort,
                 limiter: BatchLimiterPort, locks: BatchLockPort, rates: RatesPort, config: ProcessorConfig,
                 stopping: asyncio.Event, sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(orders, gateway, queue, limiter, locks, rates, config, stopping, sleep)
        self.b_orders, self.b_gateway, self.b_queue = orders, gateway, queue
        self.b_limiter, self.b_locks = limiter, locks
        self._away: set[str] = set()  # channels whose current batch found a dependency away

    def _left_while_away(self, delivery: Delivery, away: str) -> Handled:
        self._away.add(delivery.channel)
        return super()._left_while_away(delivery, away)

    async def handle_batch(self, deliveries: list[Delivery]) -> list[Handled]:
        """handle() for each message of one channel; one result per message, in order."""
        if len(deliveries) <= 1:
            return [await self.handle(d) for d in deliveries]
        channel = deliveries[0].channel
        assert all(d.channel == channel for d in deliveries), "one channel per batch"
        # A span has one parent: the batch links to each message's producer instead.
        links = [Link(ctx) for d in deliveries
                 if (ctx := get_current_span(context_of({"traceparent": d.traceparent})).get_span_context())
                 .is_valid]
        with _tracer.start_as_current_span("payout batch", kind=SpanKind.CONSUMER, links=links, attributes={
            "messaging.system": "redis", "messaging.destination.name": channel,
            "messaging.batch.message_count": len(deliveries),
        }):
            done: dict[str, Handled] = {}
            one_by_one: list[Delivery] = []
            self._away.discard(channel)
            await self._batch(channel, deliveries, done, one_by_one)
            # The pause ends once messages get somewhere again, unless this very batch
            # found a dependency away for some of them.
            if channel not in self._away and any(h is not Handled.LEFT for h in done.values()):
                self._pauses.pop(channel, None)
                self._away_runs.pop(channel, None)
            for delivery in one_by_one:  # the rare cases, each as a single message (locks released)
                done[delivery.entry_id] = await self.handle(delivery)
        return [done[d.entry_id] for d in deliveries]

    async def _batch(self, channel: str, deliveries: list[Delivery], done: dict[str, Handled],
                     one_by_one: list[Delivery]) -> None:
        in_hand: dict[str, Delivery] = {}
        for delivery in deliveries:
            if delivery.job is None:
                one_by_one.append(delivery)  # dead-lettered by handle()
            else:
                in_hand[delivery.entry_id] = delivery

        def finish(delivery: Delivery, handled: Handled) -> None:
            in_hand.pop(delivery.entry_id, None)
            done[delivery.entry_id] = handled
            count_handled(channel, handled)

        held: dict[str, str] = {}
        try:
            held.update(await self.b_locks.acquire_many([_job(d).order_id for d in in_hand.values()]))
            seen: set[str] = set()
            for delivery in list(in_hand.values()):
                order_id = _job(delivery).order_id
                if order_id not in held or order_id in seen:
                    # Another worker is on this order (or an earlier twin message of this
                    # batch is): left for redelivery, as handle() does; no attempt counted.
                    log.info("order %s locked by another worker; message %s left for redelivery",
                             order_id, delivery.entry_id)
                    finish(delivery, Handled.LEFT)
                seen.add(order_id)
            lease = BatchPaymentLease(self.b_locks, self.b_queue, channel, held, in_hand,
                             self.config.keepalive_s, self.sleep)
            await self._open_rate(channel, lease)
            to_pay = await self._begin(channel, in_hand, finish, one_by_one, held)
            await self._pay_all(channel, to_pay, lease, finish)
        except Exception as exc:
            # The batch as a whole could go no further: every message still in hand is
            # judged as handle() judges a message that met this error.
            await asyncio.gather(*(self._settle_error(d, exc, finish) for d in list(in_hand.values())))
        finally:
            try:
                await self.b_locks.release_many(held)
            except Exception as exc:
                log.warning("could not release the order locks of a batch (%s); they expire", exc)

    async def _begin(self, channel: str, in_hand: dict[str, Delivery], finish: _Finish,
                     one_by_one: list[Delivery], held: dict[str, str]) -> list[tuple[Delivery, Order]]:
        deliveries = list(in_hand.values())
        begun = await self.b_orders.begin_payout_batch([_job(d).order_id for d in deliveries])
        to_pay: list[tuple[Delivery, Order]] = []
        acked: list[Delivery] = []
        failed: list[Awaitable[None]] = []
        for delivery, outcome in zip(deliveries, begun, strict=True):
            if isinstance(outcome, Exception):
                failed.append(self._settle_error(delivery, outcome, finish))
            elif outcome.acquired:
                to_pay.append((delivery, outcome.order))
            elif outcome.order.state.terminal or outcome.order.state is OrderState.PENDING_DEDUCT:
                log.info("order %s already %s; nothing to do", outcome.order.order_id,
                         outcome.order.state.value)
                acked.append(delivery)
            else:
                # PAYING (queried before it is paid) or back to PENDING_PAYOUT: rare, and
                # handle() knows them; it takes the lock itself.
                in_hand.pop(delivery.entry_id, None)
                one_by_one.append(delivery)
                token = held.pop(outcome.order.order_id, None)
                if token is not None:
                    await self.b_locks.release_many({outcome.order.order_id: token})
        await self.b_queue.ack_many(channel, acked)
        for delivery in acked:
            finish(delivery, Handled.ACKED)
        await asyncio.gather(*failed)
        return to_pay

    async def _pay_all(self, channel: str, to_pay: list[tuple[Delivery, Order]], lease: BatchPaymentLease,
                       finish: _Finish) -> None:
        """Pay in grants of the limiter: a grant goes out at once as one gateway call; the
        rest wait in hand for their turn (pacing, never an attempt)."""
        pending = to_pay
        while pending:
            await lease.refresh()
            rate = await self._open_rate(channel, lease)
            granted, wait = await self.b_limiter.take(channel, rate, len(pending))
            if granted <= 0:
                if self.stopping.is_set():
                    # PAYING with no gateway record: the redelivery queries, finds nothing, pays.
                    for delivery, _order in pending:
                        finish(delivery, Handled.LEFT)
                    return
                await lease.sleep(min(max(wait, 0.001), RATE_RECHECK_S))
                continue
            chunk, pending = pending[:granted], pending[granted:]
            busy = await self._pay_chunk(channel, chunk, finish)
            if busy:
                # Over the gateway's capacity: nothing recorded for these. Pacing.
                if self.stopping.is_set():
                    for delivery, _order in busy:
                        finish(delivery, Handled.LEFT)
                else:
                    await lease.sleep(self.config.busy_backoff_ms / 1000.0)
                    pending = busy + pending

    async def _pay_chunk(self, channel: str, chunk: list[tuple[Delivery, Order]],
                         finish: _Finish) -> list[tuple[Delivery, Order]]:
        try:
            answers = await self.b_gateway.payout_batch([order for _, order in chunk])
        except DependencyDown:
            # No answer at all: a reply lost after the commit looks the same as a gateway
            # away; each order is queried, as handle() does after a Payout without answer.
            for _delivery, _order in chunk:
                count_gateway_call(channel, "AWAY")
            await asyncio.gather(*(self._one(d, self._after_no_answer(d, o), finish) for d, o in chunk))
            return []
        busy: list[tuple[Delivery, Order]] = []
        finals: list[tuple[Delivery, Order, GatewayAnswer]] = []
        others: list[Awaitable[None]] = []
        for (delivery, order), answer in zip(chunk, answers, strict=True):
            count_gateway_call(channel, answer.status.value)
            if answer.status is GatewayStatus.BUSY:
                busy.append((delivery, order))
            elif answer.final:
                finals.append((delivery, order, answer))
            elif answer.status is GatewayStatus.AWAY:
                finish(delivery, self._left_while_away(delivery, f"gateway: {answer.reason}"))
            else:  # PROCESSING, UNKNOWN, REFUSED: handle()'s own rules
                others.append(self._one(delivery, self._adopt(delivery, order, answer), finish))
        await self._settle_all(channel, finals, finish)
        await asyncio.gather(*others)
        return busy

    async def _settle_all(self, channel: str, finals: list[tuple[Delivery, Order, GatewayAnswer]],
                          finish: _Finish) -> None:
        if not finals:
            return
        results = await self.b_orders.settle_payout_batch(
            [(order.order_id, *settle_result(answer)) for _, order, answer in finals])
        acked: list[Delivery] = []
        failed: list[Awaitable[None]] = []
        for (delivery, order, answer), result in zip(finals, results, strict=True):
            if isinstance(result, SettleConflict):
                # Retrying cannot change a terminal order: reconciliation reports it.
                log.error("order %s: gateway says %s but withdraw_svc settled it otherwise (%s)",
                          order.order_id, answer.status.value, result)
                acked.append(delivery)
            elif isinstance(result, Exception):
                failed.append(self._settle_error(delivery, result, finish))
            else:
                acked.append(delivery)
        await self.b_queue.ack_many(channel, acked)
        for delivery in acked:
            finish(delivery, Handled.ACKED)
        await asyncio.gather(*failed)

    async def _one(self, delivery: Delivery, work: Awaitable[Handled], finish: _Finish) -> None:
        try:
            handled = await work
        except Exception as exc:
            await self._settle_error(delivery, exc, finish)
            return
        finish(delivery, handled)

    async def _settle_error(self, delivery: Delivery, exc: BaseException, finish: _Finish) -> None:
        """What handle() does with a message whose work raised `exc`."""
        job = _job(delivery)
        if isinstance(exc, ChannelPaused):
            log.warning("%s; message %s left for redelivery", exc, delivery.entry_id)
            finish(delivery, Handled.LEFT)
            return
        if isinstance(exc, DependencyDown):
            finish(delivery, self._left_while_away(delivery, str(exc)))
            return
        if isinstance(exc, AttemptFailed):
            failure = str(exc)
        elif isinstance(exc, OrderMissing):
            failure = "order not found in withdraw_svc"
        elif (outage := outage_of(exc)) is not None:
            away = f"{outage.dependency} unavailable: {outage.detail}"
            finish(delivery, self._left_while_away(delivery, away))
            return
        else:
            log.error("unexpected error while paying out %s", job.order_id, exc_info=exc)
            failure = f"unexpected error: {type(exc).__name__}: {exc}"
        try:
            finish(delivery, await self._fail_attempt(delivery, job, failure))
        except Exception as again:
            if outage_of(again) is None:
                raise
            finish(delivery, self._left_while_away(delivery, f"could not record the failed attempt: {again}"))


class _Finish(Protocol):
    def __call__(self, delivery: Delivery, handled: Handled) -> None: ...


def _job(delivery: Delivery) -> Job:
    assert delivery.job is not None
    return delivery.job
