"""Use cases of payout_svc: handle one stream message, follow up asynchronous payouts,
and the operators' view of the channels."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from meshkit.channels import check_channel
from meshkit.four_eyes import direct_change_refused
from meshkit.logs import log_context
from meshkit.outage import OutageLog, outage_of
from meshkit.streams import context_of
from meshkit.telemetry import meter, tracer
from payout_svc.domain import (
    PAUSED,
    AttemptFailed,
    Begun,
    ChannelPaused,
    ChannelRate,
    ChannelStats,
    DeadLetter,
    Delivery,
    DependencyDown,
    GatewayAnswer,
    GatewayStatus,
    GroupInfo,
    Handled,
    Job,
    Order,
    OrderMissing,
    OrderState,
    SettleConflict,
    check_dead_letter_ids,
    dead_letter_after,
    dead_letter_token,
    dlq_page_size,
    outage_backoff_s,
    retry_backoff_s,
    settle_result,
    validate_rate,
)

log = logging.getLogger(__name__)
_outages = OutageLog(log)
_tracer = tracer("payout_svc")
_meter = meter("payout_svc")
_handled = _meter.create_counter("payout.messages", description="stream messages by channel and outcome")
_gateway_calls = _meter.create_counter("payout.gateway.calls", description="gateway Payout calls by answer")
_limiter_wait = _meter.create_histogram("payout.limiter.wait", unit="ms",
                                        description="time a payout waited for its channel's rate limit")


def count_handled(channel: str, handled: Handled) -> None:
    _handled.add(1, {"channel": channel, "handled": handled.value})


def count_gateway_call(channel: str, answer: str) -> None:
    _gateway_calls.add(1, {"channel": channel, "answer": answer})


# -- ports ----------------------------------------------------------------------------------


class OrdersPort(Protocol):
    async def get_order(self, order_id: str) -> Order: ...
    async def begin_payout(self, order_id: str) -> Begun: ...
    async def settle_payout(self, order_id: str, state: OrderState, reason: str) -> Order: ...


class GatewayPort(Protocol):
    async def payout(self, order: Order) -> GatewayAnswer: ...
    async def query(self, order_id: str) -> GatewayAnswer: ...


class QueuePort(Protocol):
    async def ack(self, delivery: Delivery) -> None: ...
    async def retry(self, delivery: Delivery, job: Job) -> None: ...
    async def dead_letter(self, delivery: Delivery, job: Job | None, reason: str, attempts: int) -> None: ...
    async def park(self, delivery: Delivery, order_id: str, due_ms: int) -> None: ...
    async def touch(self, delivery: Delivery) -> None: ...
    async def repark(self, channel: str, order_id: str, due_ms: int) -> None: ...
    async def unpark(self, channel: str, order_id: str) -> None: ...
    async def requeue_awaiting(self, channel: str, order_id: str, job: Job) -> None: ...


class LimiterPort(Protocol):
    """Never asked for a paused rate: the processor waits for the channel to open first."""

    async def reserve(self, channel: str, rate: ChannelRate) -> float: ...
    async def admit(self, channel: str, rate: ChannelRate) -> float: ...


class LockPort(Protocol):
    async def acquire(self, order_id: str) -> str | None: ...
    async def release(self, order_id: str, token: str) -> bool: ...
    async def extend(self, order_id: str, token: str) -> bool: ...


class RatesPort(Protocol):
    def rate_of(self, channel: str) -> ChannelRate: ...


Sleep = Callable[[float], Awaitable[None]]
# How often a worker waiting for its slot (or for a paused channel) looks whether the
# channel's rate changed.
RATE_RECHECK_S = 0.5


@dataclass(frozen=True)
class ProcessorConfig:
    max_attempts: int = 3
    retry_backoff_ms: int = 100
    busy_backoff_ms: int = 50
    await_poll_ms: int = 1000
    # How often a worker holding an order proves it is alive (lock expiry, message idle time).
    keepalive_s: float = 1.0
    # Pause of a worker before its next message while dependencies are away: doubles from
    # the first to the last value.
    outage_backoff_ms: int = 200
    outage_backoff_max_ms: int = 2000
    # Dependency-away results in a row (no message handled between) before the channel pauses.
    away_before_pause: int = 3


def now_ms() -> int:
    return int(time.time() * 1000)


class Hold:
    """What a worker holds while paying one order: the order lock, the message when it
    came from the stream, and the rate-limit slot reserved for its gateway call. Long
    waits refresh the lock and the message, so a live worker is neither locked out by its
    own lock's expiry nor has its message reclaimed as if it had crashed."""

    def __init__(self, locks: LockPort, queue: QueuePort, delivery: Delivery | None, order_id: str,
                 token: str, every_s: float, sleep: Sleep) -> None:
        self.locks, self.queue, self.delivery = locks, queue, delivery
        self.order_id, self.token, self.every_s, self._sleep = order_id, token, every_s, sleep
        self.last = time.monotonic()
        # The reserved slot: when it comes (time.monotonic()) and the rate it was cut for.
        self.slot: tuple[float, ChannelRate] | None = None

    async def refresh(self) -> None:
        if time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        if not await self.locks.extend(self.order_id, self.token):
            # Only a convenience is lost: BeginPayout's compare-and-set and the gateway's
            # idempotency still keep the order from being paid twice.
            log.warning("order lock expired while held; carrying on")
        if self.delivery is not None:
            await self.queue.touch(self.delivery)

    async def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await self._sleep(min(left, self.every_s))
            await self.refresh()


class PayoutProcessor:
    def __init__(self, orders: OrdersPort, gateway: GatewayPort, queue: QueuePort, limiter: LimiterPort,
                 locks: LockPort, rates: RatesPort, config: ProcessorConfig, stopping: asyncio.Event,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.orders, self.gateway, self.queue = orders, gateway, queue
        self.limiter, self.locks, self.rates = limiter, locks, rates
        self.config, self.stopping, self.sleep = config, stopping, sleep
        # Per channel, how long a worker should pause before its next message: grows while
        # dependencies are found away, back to 0 at the first message that gets anywhere.
        self._pauses: dict[str, float] = {}
        self._away_runs: dict[str, int] = {}

    def pause_of(self, channel: str) -> float:
        return self._pauses.get(channel, 0.0)

    async def handle(self, delivery: Delivery) -> Handled:
        job = delivery.job
        if job is None:
            log.error("message %s on %s holds no readable PayoutJob; dead-lettered",
                      delivery.entry_id, delivery.channel)
            await self.queue.dead_letter(delivery, None, "malformed message: no readable PayoutJob", 0)
            return Handled.DEAD
        parent = context_of({"traceparent": delivery.traceparent})
        attributes: dict[str, str | int] = {
            "messaging.system": "redis", "messaging.destination.name": delivery.channel,
            "messaging.message.id": delivery.entry_id, "payout.order_id": job.order_id,
            "payout.attempt": job.attempt,
        }
        with _tracer.start_as_current_span("payout process", context=parent, kind=SpanKind.CONSUMER,
                                           attributes=attributes) as span, \
                log_context(order_id=job.order_id, uid=job.uid):
            handled = await self._handle(delivery, job)
            if handled is not Handled.LEFT:
                self._pauses.pop(delivery.channel, None)
                self._away_runs.pop(delivery.channel, None)
            span.set_attribute("payout.handled", handled.value)
            _handled.add(1, {"channel": delivery.channel, "handled": handled.value})
            return handled

    async def _handle(self, delivery: Delivery, job: Job) -> Handled:
        token = await self.locks.acquire(job.order_id)
        if token is None:
            # Another worker is on this order (a duplicate message). Leaving this copy
            # un-acked costs nothing: it is reclaimed after the idle timeout and by then
            # finds the order settled. Nothing failed, so no attempt is counted.
            log.info("order locked by another worker; message %s left for redelivery", delivery.entry_id)
            return Handled.LEFT
        hold = Hold(self.locks, self.queue, delivery, job.order_id, token,
                    self.config.keepalive_s, self.sleep)
        try:
            # The slot is reserved first so that waiting for it overlaps reading and
            # beginning the order; a message that turns out to need no call wastes one slot,
            # which only ever lowers the rate.
            await self._reserve(delivery.channel, hold)
            return await self._work(delivery, hold)
        except ChannelPaused as exc:
            log.warning("%s; message %s left for redelivery", exc, delivery.entry_id)
            return Handled.LEFT
        except DependencyDown as exc:
            return self._left_while_away(delivery, str(exc))
        except AttemptFailed as exc:
            failure = str(exc)
        except OrderMissing:
            failure = "order not found in withdraw_svc"
        except Exception as exc:
            if (outage := outage_of(exc)) is not None:
                # Redis away (ack, limiter, lock): just as little the message's fault.
                return self._left_while_away(delivery, f"{outage.dependency} unavailable: {outage.detail}")
            log.exception("unexpected error while paying out")
            failure = f"unexpected error: {type(exc).__name__}: {exc}"
        finally:
            await release_quietly(self.locks, job.order_id, token)
        return await self._fail_attempt(delivery, job, failure)

    def _left_while_away(self, delivery: Delivery, away: str) -> Handled:
        """A dependency is away (withdraw_svc, the gateway, Redis): not the message's fault,
        so no attempt is counted. The message stays un-acked and XAUTOCLAIM hands it out
        again once it has been idle claim_idle_ms; every step is safe to repeat (BeginPayout
        is a compare-and-set, a PAYING order is queried before it is paid, settling is
        idempotent). Left rather than retried in place: a worker holds no lock and no
        message while it waits, a drain finds nothing in hand, and the wait needs no Redis
        (which may be what is away). Workers pause before their next message (pause_of), so
        an outage is no hot loop and pulls the backlog into the pending list only slowly."""
        # One refused call is a hiccup (a transient error of a busy gateway), not an outage:
        # pausing every worker of the channel for each would stall it under a few percent
        # of them. Only a run of them, with no message handled in between, pauses it.
        away_run = self._away_runs.get(delivery.channel, 0) + 1
        self._away_runs[delivery.channel] = away_run
        if away_run >= self.config.away_before_pause:
            self._pauses[delivery.channel] = outage_backoff_s(
                self.pause_of(delivery.channel), self.config.outage_backoff_ms,
                self.config.outage_backoff_max_ms)
        log.warning("%s; message %s left for redelivery", away, delivery.entry_id)
        return Handled.LEFT

    async def _work(self, delivery: Delivery, hold: Hold) -> Handled:
        assert delivery.job is not None
        # BeginPayout is the reload: it returns the order in whatever state it is, and moves
        # it to PAYING (compare-and-set) only if it waits for its payout.
        begun = await self.orders.begin_payout(delivery.job.order_id)
        for _ in range(4):
            order = begun.order
            if begun.acquired:
                return await self._pay(delivery, order, hold)
            if order.state.terminal:
                log.info("order already %s; nothing to do", order.state.value)
                await self.queue.ack(delivery)
                return Handled.ACKED
            if order.state is OrderState.PENDING_DEDUCT:
                log.warning("order is still PENDING_DEDUCT: no payout job should exist yet; acknowledged")
                await self.queue.ack(delivery)
                return Handled.ACKED
            if order.state is OrderState.PAYING:
                # An earlier delivery (or the compensation job) may already have paid.
                answer = await self.gateway.query(order.order_id)
                if answer.status is GatewayStatus.NOT_FOUND:
                    return await self._pay(delivery, order, hold)
                return await self._adopt(delivery, order, answer)
            begun = await self.orders.begin_payout(order.order_id)  # PENDING_PAYOUT again: retry
        raise AttemptFailed("order state kept changing while locked")

    async def _pay(self, delivery: Delivery, order: Order, hold: Hold) -> Handled:
        while True:
            await self._take_turn(delivery.channel, hold)
            try:
                answer = await self.gateway.payout(order)
            except DependencyDown:
                _gateway_calls.add(1, {"channel": delivery.channel, "answer": "AWAY"})
                return await self._after_no_answer(delivery, order)
            _gateway_calls.add(1, {"channel": delivery.channel, "answer": answer.status.value})
            if answer.status is not GatewayStatus.BUSY:
                return await self._adopt(delivery, order, answer)
            # Over the channel's capacity: nothing was recorded. Pacing, not a failure.
            if self.stopping.is_set():
                # The order stays PAYING with no gateway record; the redelivery queries, finds
                # nothing and pays.
                return Handled.LEFT
            await hold.sleep(self.config.busy_backoff_ms / 1000.0)

    def paused(self, channel: str) -> bool:
        return self.rates.rate_of(channel).paused

    async def _open_rate(self, channel: str, hold: Hold) -> ChannelRate:
        """The channel's rate once it is not paused. Waiting is pacing, never an attempt;
        a stop while paused leaves the message for redelivery."""
        while (rate := self.rates.rate_of(channel)).paused:
            if self.stopping.is_set():
                raise ChannelPaused(f"channel {channel} is paused")
            await hold.sleep(RATE_RECHECK_S)
        return rate

    async def _after_no_answer(self, delivery: Delivery, order: Order) -> Handled:
        """Payout got no answer (UNAVAILABLE). A reply lost after the commit looks just the
        same as a gateway that is away: one query tells them apart, so a payout that went
        through settles now rather than at its redelivery. If the gateway has no record, or
        does not answer the query either, it is away: the message is left (DependencyDown)
        and its redelivery queries again before paying."""
        answer = await self.gateway.query(order.order_id)
        if answer.status is GatewayStatus.NOT_FOUND:
            raise DependencyDown("gateway: no answer to Payout and no record of the order")
        return await self._adopt(delivery, order, answer)

    async def _reserve(self, channel: str, hold: Hold) -> None:
        rate = await self._open_rate(channel, hold)
        hold.slot = (time.monotonic() + await self.limiter.reserve(channel, rate), rate)

    async def _take_turn(self, channel: str, hold: Hold) -> None:
        """Wait for the channel's rate limit. Waiting is pacing: it never counts as an attempt."""
        await hold.refresh()
        started = time.monotonic()
        if hold.slot is None:
            await self._reserve(channel, hold)
        while hold.slot is not None:
            due, rate = hold.slot
            if rate != self.rates.rate_of(channel):
                # The slot was cut for the old rate (after a raise from 1/s it could be many
                # seconds away): take one on the new schedule (a pause is waited out first).
                await self._reserve(channel, hold)
                continue
            left = due - time.monotonic()
            if left <= 0:
                hold.slot = None
            else:
                await hold.sleep(min(left, RATE_RECHECK_S))
        while (wait := await self.limiter.admit(channel, await self._open_rate(channel, hold))) > 0:
            await hold.sleep(wait)
        _limiter_wait.record((time.monotonic() - started) * 1000.0, {"channel": channel})

    async def _adopt(self, delivery: Delivery, order: Order, answer: GatewayAnswer) -> Handled:
        if answer.final:
            await settle(self.orders, order, answer)
            await self.queue.ack(delivery)
            return Handled.ACKED
        if answer.status is GatewayStatus.PROCESSING:
            log.info("gateway accepted the payout asynchronously; awaiting its final state")
            await self.queue.park(delivery, order.order_id, now_ms() + self.config.await_poll_ms)
            return Handled.PARKED
        if answer.status is GatewayStatus.UNKNOWN:
            # The money may have left: never a failure. The retry queries the gateway first.
            raise AttemptFailed(f"payout outcome unknown: {answer.reason}")
        assert delivery.job is not None
        if delivery.job.attempt + 1 >= self.config.max_attempts:
            # Refused on every attempt (the method unbound, the account unknown...): the
            # gateway recorded nothing, and will not. Left PAYING, the order would hold the
            # user's money until someone looks; failed, its refund follows in the same
            # transaction. Asked once more first: only "no record" makes failing it safe.
            check = await self.gateway.query(order.order_id)
            if check.status is GatewayStatus.NOT_FOUND:
                log.warning("gateway refused the payout %d times (%s): order failed, refund follows",
                            delivery.job.attempt + 1, answer.reason)
                return await self._adopt(delivery, order, GatewayAnswer(
                    GatewayStatus.FAILED, f"gateway refused the payout: {answer.reason}"[:200]))
            if check.status is not GatewayStatus.REFUSED:
                return await self._adopt(delivery, order, check)
        raise AttemptFailed(f"gateway refused the payout: {answer.reason}")

    async def _fail_attempt(self, delivery: Delivery, job: Job, reason: str) -> Handled:
        attempts = job.attempt + 1
        if attempts >= self.config.max_attempts:
            await self.queue.dead_letter(delivery, job.next_attempt(reason), reason, attempts)
            log.warning("attempt %d failed (%s); moved to the dead-letter stream, the order is left "
                        "for the compensation job", attempts, reason)
            return Handled.DEAD
        log.info("attempt %d failed (%s); retrying", attempts, reason)
        # The message is still un-acked while we back off: a crash here loses nothing.
        if not self.stopping.is_set():
            await self.sleep(retry_backoff_s(job.attempt, self.config.retry_backoff_ms))
        await self.queue.retry(delivery, job.next_attempt(reason))
        return Handled.RETRIED


async def release_quietly(locks: LockPort, order_id: str, token: str) -> None:
    try:
        await locks.release(order_id, token)
    except Exception as exc:
        _outages.failed(exc, "could not release the order lock; it expires on its own")


async def settle(orders: OrdersPort, order: Order, answer: GatewayAnswer) -> None:
    state, reason = settle_result(answer)
    try:
        settled = await orders.settle_payout(order.order_id, state, reason)
    except SettleConflict as exc:
        # Retrying cannot change a terminal order: reconciliation reports it.
        log.error("gateway says %s but withdraw_svc settled the order otherwise (%s)", state.value, exc)
        return
    log.debug("order settled %s", settled.state.value)


class AwaitingChecker:
    """Follows payouts the gateway accepted asynchronously until they are final."""

    def __init__(self, orders: OrdersPort, gateway: GatewayPort, queue: QueuePort, locks: LockPort,
                 config: ProcessorConfig) -> None:
        self.orders, self.gateway, self.queue, self.locks, self.config = orders, gateway, queue, locks, config

    async def check(self, channel: str, order_id: str) -> str:
        """Returns what was done: settled, waiting, requeued, dropped, busy, away."""
        with _tracer.start_as_current_span("payout await check", attributes={"payout.order_id": order_id}), \
                log_context(order_id=order_id):
            token = await self.locks.acquire(order_id)
            if token is None:
                return "busy"  # its lease brings it back
            try:
                return await self._check(channel, order_id)
            except DependencyDown as exc:
                # Its lease (claim_due) brings it back: a dependency away costs nothing here.
                log.warning("%s; awaited payout checked again later", exc)
                return "away"
            finally:
                await release_quietly(self.locks, order_id, token)

    async def _check(self, channel: str, order_id: str) -> str:
        try:
            order = await self.orders.get_order(order_id)
        except OrderMissing:
            log.error("awaited order is unknown to withdraw_svc; dropped")
            await self.queue.unpark(channel, order_id)
            return "dropped"
        if order.state.terminal or order.state is OrderState.PENDING_DEDUCT:
            await self.queue.unpark(channel, order_id)
            return "dropped"
        if order.state is OrderState.PENDING_PAYOUT:
            await self.queue.requeue_awaiting(channel, order_id, order.as_job())
            return "requeued"
        answer = await self.gateway.query(order_id)
        if answer.final:
            await settle(self.orders, order, answer)
            await self.queue.unpark(channel, order_id)
            return "settled"
        if answer.status is GatewayStatus.NOT_FOUND:
            log.warning("gateway has no record of an awaited payout; queued again")
            await self.queue.requeue_awaiting(channel, order_id, order.as_job())
            return "requeued"
        await self.queue.repark(channel, order_id, now_ms() + self.config.await_poll_ms)
        return "waiting"


# -- operators -----------------------------------------------------------------------------


class RateConfigPort(Protocol):
    """The configured rate of each channel (payout_svc.repository.RatesRepository)."""

    async def all_rates(self) -> dict[str, ChannelRate]: ...
    async def seed_rates(self, rates: dict[str, ChannelRate]) -> None: ...
    async def set_rate(self, channel: str, rate: ChannelRate, actor: str, reason: str) -> None: ...


class ChannelRates:
    """The rates in force in this process: PostgreSQL's channel_config, re-read every few
    seconds so a change made through any replica reaches all of them. A channel with no
    configured rate is paused, never unlimited."""

    def __init__(self, repo: RateConfigPort, channels: tuple[str, ...],
                 defaults: dict[str, ChannelRate]) -> None:
        self.repo = repo
        self.channels = channels
        self.defaults = defaults
        self.rates: dict[str, ChannelRate] = {ch: PAUSED for ch in channels}

    async def start(self) -> None:
        await self.repo.seed_rates({ch: self.defaults[ch] for ch in self.channels if ch in self.defaults})
        stored = await self.refresh()
        for channel in self.channels:
            if channel not in stored:
                log.warning("channel %s has no configured rate: paused (no payouts) until SetChannelRate "
                            "gives it one, or PAYOUT_DEFAULT_RATES does", channel)
            elif stored[channel].paused:
                log.warning("channel %s is paused (rate 0): no payouts until SetChannelRate", channel)

    async def refresh(self) -> dict[str, ChannelRate]:
        stored = await self.repo.all_rates()
        for channel in self.channels:
            self.rates[channel] = stored.get(channel, PAUSED)
        return stored

    def rate_of(self, channel: str) -> ChannelRate:
        return self.rates.get(channel, PAUSED)

    async def set(self, channel: str, rate: ChannelRate, actor: str, reason: str = "") -> None:
        await self.repo.set_rate(channel, rate, actor, reason)
        self.rates[channel] = rate


class StreamStats(Protocol):
    async def group_info(self, channel: str) -> GroupInfo: ...


class DeadLettersPort(Protocol):
    async def count(self, channel: str) -> int: ...
    async def read(self, channel: str, limit: int, after: str | None = None) -> list[DeadLetter]: ...
    async def replay(self, channel: str, ids: list[str]) -> int: ...


class RateGauge(Protocol):
    async def current_rate(self, channel: str) -> float: ...


class AuditPort(Protocol):
    async def record(self, actor: str, action: str, target: str, old: Any, new: Any,
                     reason: str = "") -> None: ...


class PayoutAdmin:
    def __init__(self, streams: StreamStats, dead_letters: DeadLettersPort, gauge: RateGauge,
                 rates: ChannelRates, audit: AuditPort, four_eyes: bool = True) -> None:
        self.streams, self.dead_letters, self.gauge, self.rates = streams, dead_letters, gauge, rates
        self.audit = audit
        self.four_eyes = four_eyes   # direct SetChannelRate refused (meshkit/four_eyes.py)

    async def stats(self, channel: str) -> list[ChannelStats]:
        if channel:
            check_channel(channel, self.rates.channels)
        return [await self.stats_of(ch) for ch in ([channel] if channel else self.rates.channels)]

    async def stats_of(self, channel: str) -> ChannelStats:
        group = await self.streams.group_info(channel)
        current = await self.gauge.current_rate(channel)
        dead = await self.dead_letters.count(channel)
        return ChannelStats(channel, group.backlog, group.pending, group.consumers,
                            self.rates.rate_of(channel), current, dead)

    async def set_rate(self, channel: str, rate_per_second: float, unlimited: bool,
                       actor: str) -> ChannelStats:
        if self.four_eyes:
            raise direct_change_refused("a rate change", "ProposeRateChange", "ApproveRateChange")
        rate = self.check_rate(channel, rate_per_second, unlimited)
        await self.rates.set(channel, rate, actor)
        log.info("channel %s rate set to %s by %s", channel, rate, actor)
        return await self.stats_of(channel)

    def check_rate(self, channel: str, rate_per_second: float, unlimited: bool) -> ChannelRate:
        check_channel(channel, self.rates.channels)
        return validate_rate(rate_per_second, unlimited)

    async def list_dead_letters(
        self, channel: str, page_size: int, page_token: str
    ) -> tuple[list[DeadLetter], str]:
        """A page of the channel's dead letters, oldest first, and the next page's token
        (the last letter's id), empty on the last page."""
        check_channel(channel, self.rates.channels)
        size = dlq_page_size(page_size)
        letters = await self.dead_letters.read(channel, size + 1, dead_letter_after(page_token))
        return letters[:size], (dead_letter_token(letters[size - 1]) if len(letters) > size else "")

    async def replay(self, channel: str, ids: list[str], actor: str) -> int:
        check_channel(channel, self.rates.channels)
        check_dead_letter_ids(ids)
        replayed = await self.dead_letters.replay(channel, ids)
        log.info("replayed %d dead letters of %s (by %s)", replayed, channel, actor)
        # After the replay, which is Redis's: a replay that failed half-way is not recorded
        # as done, and the entries it did move are visible on the stream.
        await self.audit.record(actor, "dlq.replay", channel, None,
                                {"dead_letter_ids": ids or "all", "replayed": replayed})
        return replayed
