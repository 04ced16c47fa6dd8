"""The batch path of the payout worker against in-memory fakes of its ports: each order of
a batch keeps its own outcome (mixed answers in one batch, one order's conflict or refusal
touching no other), the limiter's partial grants pace without counting attempts, and the
batch calls are made once per batch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from payout_svc.batch import BatchPayoutProcessor
from payout_svc.domain import (
    AttemptFailed,
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
    SettleConflict,
)
from payout_svc.service import ProcessorConfig

S, F, P = GatewayStatus.SUCCEEDED, GatewayStatus.FAILED, GatewayStatus.PROCESSING
CONFIG = ProcessorConfig(max_attempts=3, retry_backoff_ms=1, busy_backoff_ms=1, await_poll_ms=1000,
                         keepalive_s=0.01)


class Orders:
    def __init__(self, orders: list[Order]) -> None:
        self.orders = {o.order_id: o for o in orders}
        self.calls: list[str] = []
        self.begin_down = False

    async def get_order(self, order_id: str) -> Order:
        if order_id not in self.orders:
            raise OrderMissing(order_id)
        return self.orders[order_id]

    def _begin(self, order_id: str) -> Begun | Exception:
        order = self.orders.get(order_id)
        if order is None:
            return OrderMissing(order_id)
        if order.state is OrderState.PENDING_PAYOUT:
            self.orders[order_id] = replace(order, state=OrderState.PAYING)
            return Begun(self.orders[order_id], True)
        return Begun(order, False)

    async def begin_payout(self, order_id: str) -> Begun:
        self.calls.append(f"begin {order_id}")
        got = self._begin(order_id)
        if isinstance(got, Exception):
            raise got
        return got

    async def begin_payout_batch(self, order_ids: list[str]) -> list[Begun | Exception]:
        self.calls.append(f"begin_batch {len(order_ids)}")
        if self.begin_down:
            raise DependencyDown("withdraw_svc: UNAVAILABLE")
        return [self._begin(o) for o in order_ids]

    def _settle(self, order_id: str, state: OrderState, reason: str) -> Order | Exception:
        order = self.orders[order_id]
        if order.state.terminal and order.state is not state:
            return SettleConflict(f"{order_id} is {order.state}")
        self.orders[order_id] = replace(order, state=state, failure_reason=reason)
        return self.orders[order_id]

    async def settle_payout(self, order_id: str, state: OrderState, reason: str) -> Order:
        self.calls.append(f"settle {order_id}")
        got = self._settle(order_id, state, reason)
        if isinstance(got, Exception):
            raise got
        return got

    async def settle_payout_batch(self, items: list[tuple[str, OrderState, str]]) -> list[Order | Exception]:
        self.calls.append(f"settle_batch {len(items)}")
        return [self._settle(*item) for item in items]


class Gateway:
    """Answers per order id, in turn; a batch call may be made to fail as a whole."""

    def __init__(self, answers: dict[str, list[GatewayAnswer]],
                 queries: dict[str, GatewayAnswer] | None = None) -> None:
        self.answers = answers
        self.queries = queries or {}
        self.batches: list[list[str]] = []
        self.single: list[str] = []
        self.queried: list[str] = []
        self.batch_down = 0

    async def payout(self, order: Order) -> GatewayAnswer:
        self.single.append(order.order_id)
        return self.answers[order.order_id].pop(0)

    async def payout_batch(self, orders: list[Order]) -> list[GatewayAnswer]:
        self.batches.append([o.order_id for o in orders])
        if self.batch_down:
            self.batch_down -= 1
            raise DependencyDown("gateway: UNAVAILABLE")
        return [self.answers[o.order_id].pop(0) for o in orders]

    async def query(self, order_id: str) -> GatewayAnswer:
        self.queried.append(order_id)
        return self.queries.get(order_id, GatewayAnswer(GatewayStatus.NOT_FOUND))


@dataclass
class Queue:
    acked: list[str] = field(default_factory=list)
    ack_calls: int = 0
    retried: list[Job] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    parked: list[str] = field(default_factory=list)

    async def ack(self, delivery: Delivery) -> None:
        self.ack_calls += 1
        self.acked.append(_id(delivery))

    async def ack_many(self, channel: str, deliveries: list[Delivery]) -> None:
        if deliveries:
            self.ack_calls += 1
            self.acked += [_id(d) for d in deliveries]

    async def touch_many(self, channel: str, deliveries: list[Delivery]) -> None:
        pass

    async def retry(self, delivery: Delivery, job: Job) -> None:
        self.retried.append(job)

    async def dead_letter(self, delivery: Delivery, job: Job | None, reason: str, attempts: int) -> None:
        self.dead.append(_id(delivery))

    async def park(self, delivery: Delivery, order_id: str, due_ms: int) -> None:
        self.parked.append(order_id)

    async def touch(self, delivery: Delivery) -> None:
        pass

    async def repark(self, channel: str, order_id: str, due_ms: int) -> None:
        pass

    async def unpark(self, channel: str, order_id: str) -> None:
        pass

    async def requeue_awaiting(self, channel: str, order_id: str, job: Job) -> None:
        pass


class Limiter:
    """Grants in the given sizes, in turn (then everything): a 0 is "wait"."""

    def __init__(self, grants: list[int] | None = None) -> None:
        self.grants = grants or []
        self.asked: list[int] = []

    async def reserve(self, channel: str, rate: ChannelRate) -> float:
        return 0.0

    async def admit(self, channel: str, rate: ChannelRate) -> float:
        return 0.0

    async def take(self, channel: str, rate: ChannelRate, wanted: int) -> tuple[int, float]:
        self.asked.append(wanted)
        granted = min(wanted, self.grants.pop(0)) if self.grants else wanted
        return granted, 0.0 if granted == wanted else 0.001


class Locks:
    def __init__(self, taken: set[str] | None = None) -> None:
        self.held: dict[str, str] = {o: "other" for o in taken or set()}
        self.round_trips = 0

    async def acquire(self, order_id: str) -> str | None:
        if order_id in self.held:
            return None
        self.held[order_id] = "t"
        return "t"

    async def release(self, order_id: str, token: str) -> bool:
        if self.held.get(order_id) == token:
            del self.held[order_id]
            return True
        return False

    async def extend(self, order_id: str, token: str) -> bool:
        return True

    async def acquire_many(self, order_ids: list[str]) -> dict[str, str]:
        self.round_trips += 1
        got = {}
        for order_id in order_ids:
            if order_id not in self.held:
                self.held[order_id] = got[order_id] = f"b-{order_id}"
        return got

    async def release_many(self, held: dict[str, str]) -> None:
        self.round_trips += 1
        for order_id, token in held.items():
            await self.release(order_id, token)

    async def extend_many(self, held: dict[str, str]) -> None:
        pass


class Rates:
    def rate_of(self, channel: str) -> ChannelRate:
        return ChannelRate(100.0)


def _id(delivery: Delivery) -> str:
    assert delivery.job is not None
    return delivery.job.order_id


def order(order_id: str, state: OrderState = OrderState.PENDING_PAYOUT) -> Order:
    return Order(order_id, 7, "bank", f"m-{order_id}", 100, state)


def deliveries(orders: list[Order], attempt: int = 0) -> list[Delivery]:
    return [Delivery("bank", f"{n}-0", replace(o.as_job(), attempt=attempt), b"raw", "")
            for n, o in enumerate(orders, start=1)]


@dataclass
class World:
    orders: Orders
    gateway: Gateway
    queue: Queue = field(default_factory=Queue)
    limiter: Limiter = field(default_factory=Limiter)
    locks: Locks = field(default_factory=Locks)

    def processor(self) -> BatchPayoutProcessor:
        return BatchPayoutProcessor(self.orders, self.gateway, self.queue, self.limiter, self.locks,
                                    Rates(), CONFIG, asyncio.Event())


def ok(state: GatewayStatus = S, reason: str = "") -> list[GatewayAnswer]:
    return [GatewayAnswer(state, reason)]


async def test_mixed_outcomes_in_one_batch_each_keep_their_own() -> None:
    batch = [order("paid"), order("failed"), order("done", OrderState.SUCCEEDED), order("async"),
             order("unknown"), order("paying", OrderState.PAYING), order("gone")]
    known = batch[:-1]
    w = World(Orders(known), Gateway(
        {"paid": ok(), "failed": ok(F, "account closed"), "async": ok(P),
         "unknown": ok(GatewayStatus.UNKNOWN, "DEADLINE_EXCEEDED")},
        queries={"paying": GatewayAnswer(S)}))
    handled = await w.processor().handle_batch(deliveries(batch))
    assert handled == [Handled.ACKED, Handled.ACKED, Handled.ACKED, Handled.PARKED, Handled.RETRIED,
                       Handled.ACKED, Handled.RETRIED]
    # One call each for the batch; the PAYING order went the single way: queried, never paid.
    assert w.gateway.batches == [["paid", "failed", "async", "unknown"]]
    assert w.gateway.single == [] and w.gateway.queried == ["paying"]
    assert w.orders.calls[0] == "begin_batch 7" and "settle_batch 2" in w.orders.calls
    states = {k: v.state for k, v in w.orders.orders.items()}
    assert states == {"paid": OrderState.SUCCEEDED, "failed": OrderState.FAILED,
                      "done": OrderState.SUCCEEDED, "async": OrderState.PAYING,
                      "unknown": OrderState.PAYING, "paying": OrderState.SUCCEEDED}
    assert w.orders.orders["failed"].failure_reason == "account closed"
    assert sorted(w.queue.acked) == ["done", "failed", "paid", "paying"]
    assert w.queue.parked == ["async"]
    # The unknown outcome is never a failure: a retry, not a settle.
    retried = {j.order_id: j for j in w.queue.retried}
    assert sorted(retried) == ["gone", "unknown"] and {j.attempt for j in retried.values()} == {1}
    assert "outcome unknown" in retried["unknown"].last_error
    assert "not found" in retried["gone"].last_error
    assert w.locks.held == {}


async def test_partial_grants_wait_in_hand_and_count_no_attempt() -> None:
    batch = [order(f"o{n}") for n in range(5)]
    w = World(Orders(batch), Gateway({o.order_id: ok() for o in batch}), limiter=Limiter([2, 0, 0, 3]))
    handled = await w.processor().handle_batch(deliveries(batch))
    assert handled == [Handled.ACKED] * 5
    assert w.limiter.asked == [5, 3, 3, 3]  # one call per ask, never more than were left
    assert w.gateway.batches == [["o0", "o1"], ["o2", "o3", "o4"]]
    assert w.queue.retried == [] and w.queue.ack_calls == 2


async def test_one_orders_conflict_or_refusal_touches_no_other() -> None:
    batch = [order("a"), order("clash"), order("b"), order("refused")]
    w = World(Orders(batch), Gateway({
        "a": ok(), "b": ok(),
        "clash": ok(GatewayStatus.UNKNOWN, "ALREADY_EXISTS: paid before with different content"),
        "refused": ok(GatewayStatus.REFUSED, "FAILED_PRECONDITION: method not bound"),
    }))
    handled = await w.processor().handle_batch(deliveries(batch))
    assert handled == [Handled.ACKED, Handled.RETRIED, Handled.ACKED, Handled.RETRIED]
    assert w.orders.orders["a"].state is OrderState.SUCCEEDED
    assert w.orders.orders["b"].state is OrderState.SUCCEEDED
    assert w.orders.orders["clash"].state is OrderState.PAYING  # may have been paid: never failed
    assert w.orders.orders["refused"].state is OrderState.PAYING
    assert sorted(w.queue.acked) == ["a", "b"]


async def test_a_refusal_on_the_last_attempt_fails_only_that_order_after_a_not_found() -> None:
    batch = [order("a"), order("refused")]
    w = World(Orders(batch), Gateway({"a": ok(), "refused": ok(GatewayStatus.REFUSED, "method unbound")}))
    handled = await w.processor().handle_batch(deliveries(batch, attempt=2))
    assert handled == [Handled.ACKED, Handled.ACKED]
    assert w.gateway.queried == ["refused"]
    assert w.orders.orders["refused"].state is OrderState.FAILED
    assert "refused the payout" in w.orders.orders["refused"].failure_reason
    assert w.orders.orders["a"].state is OrderState.SUCCEEDED


async def test_busy_items_are_paced_and_sent_again_without_an_attempt() -> None:
    batch = [order("a"), order("b")]
    w = World(Orders(batch), Gateway({"a": ok(), "b": [GatewayAnswer(GatewayStatus.BUSY), GatewayAnswer(S)]}))
    handled = await w.processor().handle_batch(deliveries(batch))
    assert handled == [Handled.ACKED, Handled.ACKED]
    assert w.gateway.batches == [["a", "b"], ["b"]]
    assert w.queue.retried == []


async def test_a_batch_without_answer_is_queried_per_order() -> None:
    batch = [order("landed"), order("lost")]
    w = World(Orders(batch), Gateway({"landed": [], "lost": []}, queries={"landed": GatewayAnswer(S)}))
    w.gateway.batch_down = 1
    processor = w.processor()
    handled = await processor.handle_batch(deliveries(batch))
    # A reply lost after the commit settles at once; no record: left, no attempt counted.
    assert handled == [Handled.ACKED, Handled.LEFT]
    assert sorted(w.gateway.queried) == ["landed", "lost"]
    assert w.orders.orders["landed"].state is OrderState.SUCCEEDED
    # One order without an answer is a hiccup: the channel is not paused for it.
    assert w.queue.retried == [] and processor.pause_of("bank") == 0


async def test_withdraw_away_leaves_the_whole_batch_without_attempts() -> None:
    batch = [order("a"), order("b"), order("c")]
    w = World(Orders(batch), Gateway({}))
    w.orders.begin_down = True
    processor = w.processor()
    assert await processor.handle_batch(deliveries(batch)) == [Handled.LEFT] * 3
    assert w.queue.retried == [] and w.queue.acked == [] and w.gateway.batches == []
    # Three away in a row: an outage, the channel's workers pause.
    assert processor.pause_of("bank") > 0 and w.locks.held == {}


async def test_locked_orders_and_twins_are_left_and_the_rest_paid() -> None:
    batch = [order("a"), order("b"), order("a"), order("c")]
    w = World(Orders([order("a"), order("b"), order("c")]), Gateway({"a": ok(), "b": ok()}),
              locks=Locks({"c"}))
    handled = await w.processor().handle_batch(deliveries(batch))
    # The twin of "a" and "c" (another worker's lock) are left for redelivery, uncounted.
    assert handled == [Handled.ACKED, Handled.ACKED, Handled.LEFT, Handled.LEFT]
    assert w.gateway.batches == [["a", "b"]]
    assert w.orders.orders["c"].state is OrderState.PENDING_PAYOUT
    assert w.locks.held == {"c": "other"} and w.locks.round_trips == 2
    assert w.queue.retried == []


async def test_withdraw_refusing_one_settle_touches_no_other() -> None:
    batch = [order("a"), order("b")]
    w = World(Orders(batch), Gateway({"a": ok(), "b": ok()}))

    async def refuse_b(items: list[tuple[str, OrderState, str]]) -> list[Order | Exception]:
        return [AttemptFailed("SettlePayout refused: INTERNAL") if i[0] == "b" else w.orders._settle(*i)
                for i in items]

    w.orders.settle_payout_batch = refuse_b  # type: ignore[method-assign]
    handled = await w.processor().handle_batch(deliveries(batch))
    assert handled == [Handled.ACKED, Handled.RETRIED]
    assert w.orders.orders["a"].state is OrderState.SUCCEEDED


async def test_a_batch_of_one_is_the_single_path() -> None:
    w = World(Orders([order("a")]), Gateway({"a": ok()}))
    assert await w.processor().handle_batch(deliveries([order("a")])) == [Handled.ACKED]
    assert w.gateway.single == ["a"] and w.gateway.batches == []
    assert w.orders.calls == ["begin a", "settle a"]
