"""The payout worker's decisions, against in-memory fakes of its own ports (orders,
gateway, queue, limiter, locks). The money rules: an unknown outcome is never a failure,
a PAYING order is queried before it is paid, pacing never counts as an attempt."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import grpc
import pytest
import redis.exceptions as redis_errors

from meshkit.errors import InvalidArgument
from payout_svc import service as payout_service
from payout_svc import worker
from payout_svc.clients import GatewayClient
from payout_svc.domain import (
    PAUSED,
    UNLIMITED,
    Begun,
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
    parse_rates,
    retry_backoff_s,
    settle_result,
    validate_rate,
)
from payout_svc.service import AwaitingChecker, ChannelRates, PayoutProcessor, ProcessorConfig
from payout_svc.worker import ChannelWorkers
from tests.waiting import eventually

S, F, P = GatewayStatus.SUCCEEDED, GatewayStatus.FAILED, GatewayStatus.PROCESSING


class FakeOrders:
    def __init__(self, order: Order) -> None:
        self.order = order
        self.settled: list[tuple[OrderState, str]] = []
        self.down = False
        self.begins = 0

    async def get_order(self, order_id: str) -> Order:
        if self.down:
            raise DependencyDown("withdraw_svc: UNAVAILABLE")
        if order_id != self.order.order_id:
            raise OrderMissing(order_id)
        return self.order

    async def begin_payout(self, order_id: str) -> Begun:
        self.begins += 1
        if self.down:
            raise DependencyDown("withdraw_svc: UNAVAILABLE")
        if order_id != self.order.order_id:
            raise OrderMissing(order_id)
        if self.order.state is OrderState.PENDING_PAYOUT:
            self.order = replace(self.order, state=OrderState.PAYING)
            return Begun(self.order, True)
        return Begun(self.order, False)

    async def settle_payout(self, order_id: str, state: OrderState, reason: str) -> Order:
        assert self.order.state in (OrderState.PAYING, state)
        self.settled.append((state, reason))
        self.order = replace(self.order, state=state, failure_reason=reason)
        return self.order


class FakeGateway:
    """Answers in turn; an exception in place of an answer is raised (the gateway away)."""

    def __init__(self, answers: list[GatewayAnswer | Exception],
                 query: GatewayAnswer | Exception | None = None) -> None:
        self.answers = answers
        self.query_answer = query or GatewayAnswer(GatewayStatus.NOT_FOUND)
        self.payouts = 0
        self.queries = 0

    async def payout(self, order: Order) -> GatewayAnswer:
        self.payouts += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def query(self, order_id: str) -> GatewayAnswer:
        self.queries += 1
        if isinstance(self.query_answer, Exception):
            raise self.query_answer
        return self.query_answer


@dataclass
class FakeQueue:
    actions: list[str] = field(default_factory=list)
    retried: list[Job] = field(default_factory=list)
    dead: list[tuple[Job | None, str, int]] = field(default_factory=list)
    awaiting: dict[str, int] = field(default_factory=dict)
    requeued: list[Job] = field(default_factory=list)

    async def ack(self, delivery: Delivery) -> None:
        self.actions.append("ack")

    async def retry(self, delivery: Delivery, job: Job) -> None:
        self.actions.append("retry")
        self.retried.append(job)

    async def dead_letter(self, delivery: Delivery, job: Job | None, reason: str, attempts: int) -> None:
        self.actions.append("dead")
        self.dead.append((job, reason, attempts))

    async def park(self, delivery: Delivery, order_id: str, due_ms: int) -> None:
        self.actions.append("park")
        self.awaiting[order_id] = due_ms

    async def touch(self, delivery: Delivery) -> None:
        self.actions.append("touch")

    async def repark(self, channel: str, order_id: str, due_ms: int) -> None:
        self.awaiting[order_id] = due_ms

    async def unpark(self, channel: str, order_id: str) -> None:
        self.awaiting.pop(order_id, None)

    async def requeue_awaiting(self, channel: str, order_id: str, job: Job) -> None:
        self.awaiting.pop(order_id, None)
        self.requeued.append(job)


class FakeLimiter:
    def __init__(self, wait_s: float = 0.0) -> None:
        self.wait_s = wait_s
        self.reserved = 0
        self.admitted = 0

    async def reserve(self, channel: str, rate: ChannelRate) -> float:
        assert not rate.paused, "a paused channel asks the limiter nothing"
        self.reserved += 1
        return self.wait_s

    async def admit(self, channel: str, rate: ChannelRate) -> float:
        assert not rate.paused, "a paused channel asks the limiter nothing"
        self.admitted += 1
        # The window is full once, then the call may go.
        return 0.01 if self.admitted == 1 and self.wait_s else 0.0


class FakeLocks:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    async def acquire(self, order_id: str) -> str | None:
        if order_id in self.held:
            return None
        self.held[order_id] = f"token-{order_id}"
        return self.held[order_id]

    async def release(self, order_id: str, token: str) -> bool:
        if self.held.get(order_id) == token:
            del self.held[order_id]
            return True
        return False

    async def extend(self, order_id: str, token: str) -> bool:
        return self.held.get(order_id) == token


class FakeRates:
    def __init__(self, rate: ChannelRate | None = None) -> None:
        self.rate = rate or ChannelRate(100.0)

    def rate_of(self, channel: str) -> ChannelRate:
        return self.rate


CONFIG = ProcessorConfig(max_attempts=3, retry_backoff_ms=1, busy_backoff_ms=1, await_poll_ms=1000,
                         keepalive_s=0.01)


def make_order(state: OrderState) -> Order:
    return Order("o-1", 42, "bank", "m-1", 1500, state)


def delivery_of(job: Job | None) -> Delivery:
    return Delivery("bank", "1-0", job, b"raw", "")


@dataclass
class World:
    orders: FakeOrders
    gateway: FakeGateway
    queue: FakeQueue
    limiter: FakeLimiter
    locks: FakeLocks

    rates: FakeRates = field(default_factory=FakeRates)

    def processor(self) -> PayoutProcessor:
        return PayoutProcessor(self.orders, self.gateway, self.queue, self.limiter, self.locks,
                               self.rates, CONFIG, asyncio.Event())

    async def handle(self, attempt: int = 0) -> Handled:
        job = replace(self.orders.order.as_job(), attempt=attempt)
        return await self.processor().handle(delivery_of(job))


def world(state: OrderState, answers: list[GatewayAnswer | Exception],
          query: GatewayAnswer | Exception | None = None, wait_s: float = 0.0) -> World:
    return World(FakeOrders(make_order(state)), FakeGateway(answers, query), FakeQueue(),
                 FakeLimiter(wait_s), FakeLocks())


async def test_pending_payout_is_begun_paid_settled_and_acked() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(S)])
    assert await w.handle() == Handled.ACKED
    assert w.orders.settled == [(OrderState.SUCCEEDED, "")]
    assert w.gateway.payouts == 1 and w.gateway.queries == 0 and w.orders.begins == 1
    assert w.queue.actions == ["ack"]
    assert w.locks.held == {}


async def test_paying_order_is_queried_first_and_adopted_without_paying() -> None:
    w = world(OrderState.PAYING, [], query=GatewayAnswer(S))
    assert await w.handle(attempt=1) == Handled.ACKED
    assert w.gateway.payouts == 0
    assert w.orders.settled == [(OrderState.SUCCEEDED, "")]


async def test_paying_order_unknown_to_the_gateway_is_paid() -> None:
    w = world(OrderState.PAYING, [GatewayAnswer(S)], query=GatewayAnswer(GatewayStatus.NOT_FOUND))
    assert await w.handle(attempt=1) == Handled.ACKED
    assert (w.gateway.queries, w.gateway.payouts) == (1, 1)


async def test_unknown_outcome_is_retried_never_failed() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(GatewayStatus.UNKNOWN, "UNAVAILABLE: reply lost")])
    assert await w.handle() == Handled.RETRIED
    assert w.orders.settled == []
    assert w.orders.order.state is OrderState.PAYING
    assert [j.attempt for j in w.queue.retried] == [1]
    assert "outcome unknown" in w.queue.retried[0].last_error
    assert "ack" not in w.queue.actions


async def test_unknown_outcome_on_last_attempt_goes_to_dead_letters_and_order_stays() -> None:
    w = world(OrderState.PAYING, [GatewayAnswer(GatewayStatus.UNKNOWN, "DEADLINE_EXCEEDED")],
              query=GatewayAnswer(GatewayStatus.NOT_FOUND))
    assert await w.handle(attempt=2) == Handled.DEAD
    job, reason, attempts = w.queue.dead[0]
    assert attempts == 3 and "DEADLINE_EXCEEDED" in reason
    assert job is not None and job.attempt == 3
    assert w.orders.settled == [] and w.orders.order.state is OrderState.PAYING


async def test_definitive_failure_settles_failed_with_reason() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(F, "account closed")])
    assert await w.handle() == Handled.ACKED
    assert w.orders.settled == [(OrderState.FAILED, "account closed")]


async def test_a_refusal_is_retried_but_on_the_last_attempt_fails_the_order_for_its_refund() -> None:
    refused = GatewayAnswer(GatewayStatus.REFUSED, "FAILED_PRECONDITION: method not bound")
    w = world(OrderState.PENDING_PAYOUT, [refused])
    assert await w.handle() == Handled.RETRIED and w.orders.settled == []
    # The last attempt: asked once more, the gateway has no record, so nothing can have left.
    last = world(OrderState.PAYING, [refused], query=GatewayAnswer(GatewayStatus.NOT_FOUND))
    assert await last.handle(attempt=2) == Handled.ACKED
    assert last.orders.settled == [(OrderState.FAILED, "gateway refused the payout: "
                                                       "FAILED_PRECONDITION: method not bound")]
    assert last.queue.dead == [] and last.queue.actions == ["ack"]


async def test_a_refusal_on_the_last_attempt_with_a_gateway_record_adopts_the_record() -> None:
    refused = GatewayAnswer(GatewayStatus.REFUSED, "FAILED_PRECONDITION: method not bound")
    w = world(OrderState.PAYING, [refused])

    class PaidMeanwhile(FakeGateway):
        async def query(self, order_id: str) -> GatewayAnswer:
            self.queries += 1
            # NOT_FOUND for the PAYING check before paying, a record when asked again.
            return GatewayAnswer(GatewayStatus.NOT_FOUND if self.queries == 1 else S)

    w.gateway = PaidMeanwhile([refused])
    assert await w.handle(attempt=2) == Handled.ACKED
    assert w.orders.settled == [(OrderState.SUCCEEDED, "")]


async def test_a_conflicting_record_is_never_a_refusal() -> None:
    answer = await gateway_client(grpc.StatusCode.ALREADY_EXISTS).payout(make_order(OrderState.PAYING))
    assert answer.status is GatewayStatus.UNKNOWN


async def test_async_acceptance_is_parked() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(P)])
    assert await w.handle() == Handled.PARKED
    assert "o-1" in w.queue.awaiting and w.orders.settled == []


async def test_capacity_exhaustion_paces_without_counting_attempts() -> None:
    busy = GatewayAnswer(GatewayStatus.BUSY, "RESOURCE_EXHAUSTED")
    w = world(OrderState.PENDING_PAYOUT, [busy, busy, GatewayAnswer(S)])
    assert await w.handle() == Handled.ACKED
    assert w.gateway.payouts == 3 and w.limiter.reserved == 3 and w.limiter.admitted == 3
    assert w.queue.retried == [] and w.queue.dead == []


async def test_limiter_wait_is_honoured_and_keeps_the_hold_alive() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(S)], wait_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await w.handle() == Handled.ACKED
    assert loop.time() - started >= 0.06
    assert w.limiter.admitted == 2
    assert "touch" in w.queue.actions


async def test_a_raised_rate_is_picked_up_while_waiting_for_a_slot() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(S)])
    w.rates.rate = ChannelRate(0.1)
    # A slot cut at 0.1/s is far away; at 200/s it is now.
    slots = {ChannelRate(0.1): 30.0, ChannelRate(200.0): 0.0}

    async def reserve(channel: str, rate: ChannelRate) -> float:
        w.limiter.reserved += 1
        return slots[rate]

    w.limiter.reserve = reserve  # type: ignore[method-assign]
    task = asyncio.create_task(w.handle())
    await asyncio.sleep(0.05)  # the subject: for a while, with the slot far away, nothing finishes
    assert not task.done()
    w.rates.rate = ChannelRate(200.0)
    assert await asyncio.wait_for(task, 3.0) == Handled.ACKED
    assert w.limiter.reserved == 2 and w.gateway.payouts == 1


@pytest.fixture
def quick_rate_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payout_service, "RATE_RECHECK_S", 0.01)
    monkeypatch.setattr(worker, "RATE_RECHECK_S", 0.01)


@pytest.mark.usefixtures("quick_rate_recheck")
async def test_a_paused_channel_calls_nothing_and_spends_no_attempt_until_opened() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(S)])
    w.rates.rate = PAUSED
    waits: list[int] = []

    async def sleep(seconds: float) -> None:
        waits.append(w.gateway.payouts + w.gateway.queries + w.orders.begins + w.limiter.reserved)
        await asyncio.sleep(seconds)  # the processor's own pause, recorded and then really taken

    processor = PayoutProcessor(w.orders, w.gateway, w.queue, w.limiter, w.locks, w.rates, CONFIG,
                                asyncio.Event(), sleep=sleep)
    task = asyncio.create_task(processor.handle(delivery_of(w.orders.order.as_job())))
    await eventually(lambda: len(waits) >= 5, timeout=3.0, interval=0.005,
                     what="the worker to wait out the pause")
    assert set(waits) == {0} and not task.done()  # no gateway call, no BeginPayout, no slot
    w.rates.rate = ChannelRate(100.0)
    assert await asyncio.wait_for(task, 3.0) == Handled.ACKED
    assert w.gateway.payouts == 1 and w.queue.retried == [] and w.queue.dead == []


@pytest.mark.usefixtures("quick_rate_recheck")
async def test_a_stop_while_paused_leaves_the_message_without_an_attempt() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(S)])
    w.rates.rate = ChannelRate(0.0)
    stopping = asyncio.Event()
    processor = PayoutProcessor(w.orders, w.gateway, w.queue, w.limiter, w.locks, w.rates, CONFIG, stopping)
    task = asyncio.create_task(processor.handle(delivery_of(w.orders.order.as_job())))
    await eventually(lambda: "o-1" in w.locks.held, timeout=3.0, interval=0.005,
                     what="the message in hand")
    stopping.set()
    assert await asyncio.wait_for(task, 3.0) == Handled.LEFT
    assert w.gateway.payouts == 0 and w.queue.actions.count("retry") == 0 and w.queue.dead == []
    assert w.locks.held == {}


class ReadCountingQueue(FakeQueue):
    reads: int = 0

    async def read(self, channel: str, count: int, block_ms: int) -> list[Delivery]:
        self.reads += 1
        await asyncio.sleep(0.001)  # a read's latency: an empty read that returned at once would spin
        return []


class PausedProcessor:
    def __init__(self) -> None:
        self.asked = 0

    def paused(self, channel: str) -> bool:
        self.asked += 1
        return True


@pytest.mark.usefixtures("quick_rate_recheck")
async def test_workers_of_a_paused_channel_take_no_message() -> None:
    queue, processor = ReadCountingQueue(), PausedProcessor()
    loops = ChannelWorkers("bank", 1, queue, processor, None, 1000, 5000)  # type: ignore[arg-type]
    stopping = asyncio.Event()
    task = asyncio.create_task(loops.work(stopping))
    await eventually(lambda: processor.asked >= 5, timeout=3.0, interval=0.005,
                     what="the worker to look at the pause a few times")
    stopping.set()
    await asyncio.wait_for(task, 3.0)
    assert queue.reads == 0


class FakeRatesRepo:
    def __init__(self, stored: dict[str, ChannelRate]) -> None:
        self.stored = dict(stored)

    async def all_rates(self) -> dict[str, ChannelRate]:
        return dict(self.stored)

    async def seed_rates(self, rates: dict[str, ChannelRate]) -> None:
        for channel, rate in rates.items():
            self.stored.setdefault(channel, rate)

    async def set_rate(self, channel: str, rate: ChannelRate, actor: str, reason: str) -> None:
        self.stored[channel] = rate


async def test_a_channel_without_a_configured_rate_is_paused_not_unlimited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = FakeRatesRepo({"bank": ChannelRate(5.0)})
    rates = ChannelRates(repo, ("bank", "alipay", "balance", "open"),
                         {"balance": ChannelRate(0.0), "open": UNLIMITED})
    with caplog.at_level("WARNING", logger="payout_svc.service"):
        await rates.start()
    assert rates.rate_of("bank") == ChannelRate(5.0)
    assert rates.rate_of("alipay").paused and not rates.rate_of("alipay").unlimited
    assert rates.rate_of("balance").paused
    assert rates.rate_of("open").unlimited and not rates.rate_of("open").paused
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "alipay has no configured rate" in warned and "balance is paused" in warned
    assert "bank" not in warned and "open" not in warned
    # A row that goes away pauses the channel again; it never falls back to unlimited.
    del repo.stored["open"]
    await rates.refresh()
    assert rates.rate_of("open").paused


async def test_locked_order_is_left_for_redelivery() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(S)])
    w.locks.held["o-1"] = "someone-else"
    assert await w.handle() == Handled.LEFT
    assert w.queue.actions == [] and w.gateway.payouts == 0
    assert w.locks.held == {"o-1": "someone-else"}


@pytest.mark.parametrize("state", [OrderState.SUCCEEDED, OrderState.FAILED, OrderState.PENDING_DEDUCT])
async def test_nothing_to_pay_is_acked(state: OrderState) -> None:
    w = world(state, [])
    assert await w.handle() == Handled.ACKED
    assert w.queue.actions == ["ack"] and w.gateway.payouts == 0 and w.gateway.queries == 0


async def test_coordinator_down_leaves_the_message_without_an_attempt() -> None:
    w = world(OrderState.PENDING_PAYOUT, [])
    w.orders.down = True
    assert await w.handle() == Handled.LEFT
    assert w.queue.actions == [] and w.locks.held == {}


async def test_begin_lost_to_another_worker_queries_before_paying() -> None:
    w = world(OrderState.PENDING_PAYOUT, [], query=GatewayAnswer(S))

    async def begun_elsewhere(order_id: str) -> Begun:
        w.orders.begins += 1
        w.orders.order = replace(w.orders.order, state=OrderState.PAYING)
        return Begun(w.orders.order, False)

    w.orders.begin_payout = begun_elsewhere  # type: ignore[method-assign]
    assert await w.handle() == Handled.ACKED
    assert w.gateway.payouts == 0 and w.gateway.queries == 1 and w.orders.begins == 1


async def test_missing_order_counts_as_a_failed_attempt() -> None:
    w = world(OrderState.PENDING_PAYOUT, [])
    job = Job("o-unknown", 1, "bank", "m", 100)
    assert await w.processor().handle(delivery_of(job)) == Handled.RETRIED
    assert "not found" in w.queue.retried[0].last_error


async def test_malformed_message_is_dead_lettered() -> None:
    w = world(OrderState.PENDING_PAYOUT, [])
    assert await w.processor().handle(delivery_of(None)) == Handled.DEAD
    assert w.queue.dead[0][0] is None and "malformed" in w.queue.dead[0][1]


async def test_awaiting_checker_follows_until_final() -> None:
    w = world(OrderState.PAYING, [], query=GatewayAnswer(P))
    checker = AwaitingChecker(w.orders, w.gateway, w.queue, w.locks, CONFIG)
    w.queue.awaiting["o-1"] = 0
    assert await checker.check("bank", "o-1") == "waiting"
    assert w.queue.awaiting["o-1"] > 0
    w.gateway.query_answer = GatewayAnswer(F, "account closed")
    assert await checker.check("bank", "o-1") == "settled"
    assert w.orders.settled == [(OrderState.FAILED, "account closed")] and "o-1" not in w.queue.awaiting
    assert await checker.check("bank", "o-1") == "dropped"


async def test_awaiting_checker_requeues_when_the_gateway_has_no_record() -> None:
    w = world(OrderState.PAYING, [], query=GatewayAnswer(GatewayStatus.NOT_FOUND))
    checker = AwaitingChecker(w.orders, w.gateway, w.queue, w.locks, CONFIG)
    assert await checker.check("bank", "o-1") == "requeued"
    assert w.queue.requeued[0].order_id == "o-1" and w.queue.requeued[0].attempt == 0


def test_settle_result_only_for_final_answers() -> None:
    assert settle_result(GatewayAnswer(S)) == (OrderState.SUCCEEDED, "")
    assert settle_result(GatewayAnswer(F, "x")) == (OrderState.FAILED, "x")
    for status in (GatewayStatus.UNKNOWN, GatewayStatus.PROCESSING, GatewayStatus.BUSY,
                   GatewayStatus.NOT_FOUND, GatewayStatus.REFUSED):
        with pytest.raises(ValueError):
            settle_result(GatewayAnswer(status))


def test_parse_rates_and_validation() -> None:
    assert parse_rates("bank:2000, alipay:unlimited,balance:0.5,pix:0") == {
        "bank": ChannelRate(2000.0), "alipay": UNLIMITED, "balance": ChannelRate(0.5), "pix": PAUSED}
    assert parse_rates("pix:0")["pix"].paused and not parse_rates("a:unlimited")["a"].paused
    for bad in ("bank", "bank:-1", "bank:x", ":5", "bank:nan", ":unlimited", "bank:Unlimited"):
        with pytest.raises(ValueError):
            parse_rates(bad)
    assert validate_rate(2.5, False) == ChannelRate(2.5)
    assert validate_rate(0.0, True) == UNLIMITED
    # No limit is never what a forgotten field means: rate 0 without unlimited is refused.
    for bad_rate, unlimited in ((0.0, False), (-1.0, False), (float("inf"), False), (float("nan"), False),
                                (5.0, True)):
        with pytest.raises(InvalidArgument):
            validate_rate(bad_rate, unlimited)


def test_retry_backoff_doubles_and_is_capped() -> None:
    assert [retry_backoff_s(a, 100) for a in range(3)] == [0.1, 0.2, 0.4]
    assert retry_backoff_s(30, 100) == 5.0


# -- dependencies away: never an attempt -------------------------------------------------------

GATEWAY_AWAY = DependencyDown("gateway: UNAVAILABLE failed to connect to all addresses")


async def test_gateway_away_leaves_the_message_without_an_attempt_and_pauses_the_channel() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GATEWAY_AWAY] * 3, query=GATEWAY_AWAY)
    processor = w.processor()
    assert await processor.handle(delivery_of(w.orders.order.as_job())) == Handled.LEFT
    assert w.queue.retried == [] and w.queue.dead == [] and "ack" not in w.queue.actions
    assert w.orders.order.state is OrderState.PAYING and w.locks.held == {}
    # One refused call is a hiccup: the channel carries on at full speed.
    assert processor.pause_of("bank") == 0
    for _ in range(CONFIG.away_before_pause - 1):
        assert await processor.handle(delivery_of(w.orders.order.as_job())) == Handled.LEFT
    # A run of them is an outage: the channel's workers pause.
    assert processor.pause_of("bank") > 0 and processor.pause_of("alipay") == 0


async def test_transient_gateway_errors_between_successes_never_pause_the_channel() -> None:
    w = world(OrderState.PENDING_PAYOUT, [])
    processor = w.processor()
    for _ in range(20):
        w.orders.order = make_order(OrderState.PENDING_PAYOUT)
        w.gateway.answers = [GATEWAY_AWAY]
        w.gateway.query_answer = GatewayAnswer(GatewayStatus.NOT_FOUND)
        assert await processor.handle(delivery_of(w.orders.order.as_job())) == Handled.LEFT
        assert processor.pause_of("bank") == 0  # the other workers do not stop for a hiccup
        w.orders.order = make_order(OrderState.PENDING_PAYOUT)
        w.gateway.answers = [GatewayAnswer(S)]
        assert await processor.handle(delivery_of(w.orders.order.as_job())) == Handled.ACKED
        assert processor.pause_of("bank") == 0


async def test_gateway_down_for_many_deliveries_never_dead_letters_then_pays_once() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GATEWAY_AWAY], query=GatewayAnswer(GatewayStatus.NOT_FOUND))
    processor = w.processor()
    job = w.orders.order.as_job()
    assert await processor.handle(delivery_of(job)) == Handled.LEFT  # paid into the void
    w.gateway.query_answer = GATEWAY_AWAY
    pauses = []
    for _ in range(10):  # redeliveries (XAUTOCLAIM) while the gateway stays down
        assert await processor.handle(delivery_of(job)) == Handled.LEFT
        pauses.append(processor.pause_of("bank"))
    assert w.queue.retried == [] and w.queue.dead == []
    assert pauses == sorted(pauses) and pauses[-1] == CONFIG.outage_backoff_max_ms / 1000
    assert pauses[CONFIG.away_before_pause - 2] > 0  # paused once the run of outages is long enough
    # Back: the redelivery queries first, finds nothing, pays once and settles.
    w.gateway.query_answer = GatewayAnswer(GatewayStatus.NOT_FOUND)
    w.gateway.answers = [GatewayAnswer(S)]
    assert await processor.handle(delivery_of(job)) == Handled.ACKED
    assert w.gateway.payouts == 2 and w.orders.settled == [(OrderState.SUCCEEDED, "")]
    assert processor.pause_of("bank") == 0


async def test_a_reply_lost_after_the_commit_is_settled_by_one_query() -> None:
    w = world(OrderState.PENDING_PAYOUT, [DependencyDown("gateway: UNAVAILABLE reply lost")],
              query=GatewayAnswer(S))
    assert await w.handle() == Handled.ACKED
    assert (w.gateway.payouts, w.gateway.queries) == (1, 1)
    assert w.orders.settled == [(OrderState.SUCCEEDED, "")] and w.queue.actions == ["ack"]


async def test_paying_order_whose_query_finds_the_gateway_away_is_left() -> None:
    w = world(OrderState.PAYING, [], query=GATEWAY_AWAY)
    assert await w.handle(attempt=2) == Handled.LEFT
    assert w.gateway.payouts == 0 and w.queue.dead == [] and w.queue.retried == []


class RedisDown(FakeQueue):
    async def ack(self, delivery: Delivery) -> None:
        raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


async def test_redis_away_after_settling_is_no_attempt() -> None:
    w = world(OrderState.PENDING_PAYOUT, [GatewayAnswer(S)])
    w.queue = RedisDown()
    assert await w.handle() == Handled.LEFT
    assert w.queue.retried == [] and w.queue.dead == []
    assert w.orders.settled == [(OrderState.SUCCEEDED, "")]


async def test_awaiting_checker_with_a_dependency_away_keeps_the_order_parked() -> None:
    w = world(OrderState.PAYING, [], query=GATEWAY_AWAY)
    checker = AwaitingChecker(w.orders, w.gateway, w.queue, w.locks, CONFIG)
    w.queue.awaiting["o-1"] = 5
    assert await checker.check("bank", "o-1") == "away"
    w.gateway.query_answer = GatewayAnswer(S)
    w.orders.down = True
    assert await checker.check("bank", "o-1") == "away"
    assert w.queue.awaiting == {"o-1": 5} and w.orders.settled == [] and w.locks.held == {}


# -- the gateway adapter: which answers use up an attempt ---------------------------------------


class Stub:
    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    async def _fail(self, request: object, timeout: float) -> None:
        raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="boom")

    Payout = QueryPayout = _fail


def gateway_client(code: grpc.StatusCode) -> GatewayClient:
    client = GatewayClient.__new__(GatewayClient)
    client.stub, client.timeout_s = Stub(code), 1.0  # type: ignore[assignment]
    return client


async def test_gateway_unavailable_is_the_gateway_away_not_an_unknown_outcome() -> None:
    client = gateway_client(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(DependencyDown, match="gateway: UNAVAILABLE"):
        await client.payout(make_order(OrderState.PAYING))
    with pytest.raises(DependencyDown):
        await client.query("o-1")


@pytest.mark.parametrize("code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.UNKNOWN])
async def test_a_payout_that_may_have_committed_is_an_unknown_outcome(code: grpc.StatusCode) -> None:
    answer = await gateway_client(code).payout(make_order(OrderState.PAYING))
    assert answer.status is GatewayStatus.UNKNOWN and code.name in answer.reason


async def test_a_query_without_an_answer_in_time_is_the_gateway_away() -> None:
    with pytest.raises(DependencyDown, match="DEADLINE_EXCEEDED"):
        await gateway_client(grpc.StatusCode.DEADLINE_EXCEEDED).query("o-1")
    assert (await gateway_client(grpc.StatusCode.RESOURCE_EXHAUSTED).payout(
        make_order(OrderState.PAYING))).status is GatewayStatus.BUSY


# -- the worker loop survives Redis ---------------------------------------------------------------


class FlakyReads:
    """A channel queue whose reads fail while Redis is away, then hand out one message."""

    def __init__(self, failures: int, stopping: asyncio.Event) -> None:
        self.failures, self.stopping, self.reads = failures, stopping, 0

    async def read(self, channel: str, count: int, block_ms: int) -> list[Delivery]:
        self.reads += 1
        if self.reads <= self.failures:
            raise redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.stopping.set()
        return [delivery_of(make_order(OrderState.PENDING_PAYOUT).as_job())]


class Recorder:
    def __init__(self) -> None:
        self.handled: list[Delivery] = []

    async def handle(self, delivery: Delivery) -> Handled:
        self.handled.append(delivery)
        return Handled.ACKED

    def pause_of(self, channel: str) -> float:
        return 0.0

    def paused(self, channel: str) -> bool:
        return False


async def test_worker_loop_survives_redis_away_and_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "OUTAGE_BACKOFF_MS", 1, raising=False)
    monkeypatch.setattr(worker, "OUTAGE_BACKOFF_MAX_MS", 4, raising=False)
    stopping = asyncio.Event()
    queue, processor = FlakyReads(3, stopping), Recorder()
    loops = worker.ChannelWorkers("bank", 1, queue, processor, None, 1000, 1000)  # type: ignore[arg-type]
    await asyncio.wait_for(loops.work(stopping), 5.0)
    assert queue.reads == 4 and len(processor.handled) == 1
