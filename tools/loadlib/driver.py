"""The traffic: a mix of withdraw-page views, confirms and order queries, driven open-loop.

Open loop means calls start on a fixed schedule whatever the mesh answers, and each call's
latency is measured from the moment it was *scheduled*, not from when a free worker got to
it: a stall shows up as the latency users would see instead of hiding in a slower send rate
(coordinated omission). With rate 0 the driver runs closed-loop at maximum speed with a fixed
number of concurrent callers, and latency is plain service time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from mesh.withdraw.v1 import withdraw_pb2
from tools.loadlib.clients import MeshClients
from tools.loadlib.seeding import TestUser
from tools.loadlib.stats import SHED, Recorder

OPS = {"page": "GetWithdrawPage", "confirm": "ConfirmWithdraw", "order": "GetOrder"}
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
RETRY_AFTER_HEADER = "retry-after-ms"


def is_shed(err: grpc.aio.AioRpcError) -> bool:
    """Refused by the mesh's admission because it is saturated (RESOURCE_EXHAUSTED with a
    retry-after hint): refused, not failed, and it took nothing. Recorded as SHED."""
    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    return RETRY_AFTER_HEADER in dict(err.trailing_metadata() or ())


def retry_after_s(err: grpc.aio.AioRpcError, default_s: float, cap_s: float) -> float:
    """The server's retry-after hint (trailing metadata), bounded; `default_s` without one."""
    raw = dict(err.trailing_metadata() or ()).get(RETRY_AFTER_HEADER)
    try:
        hint = int(str(raw)) / 1000.0 if raw is not None else default_s
    except ValueError:
        hint = default_s
    return min(cap_s, max(0.0, hint))


def parse_mix(text: str) -> dict[str, int]:
    """"page=3,confirm=1,order=2" -> weights; unknown names and negative weights refused."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in OPS:
            raise ValueError(f"mix: {part!r} is not one of {', '.join(f'{k}=<weight>' for k in OPS)}")
        try:
            value = int(weight)
        except ValueError as exc:
            raise ValueError(f"mix: weight of {name!r} must be an integer") from exc
        if value < 0:
            raise ValueError(f"mix: weight of {name!r} must be >= 0")
        mix[name] = value
    if sum(mix.values()) <= 0:
        raise ValueError("mix: at least one weight must be positive")
    return mix


def op_cycle(mix: dict[str, int], seed: int) -> list[str]:
    """One period of the op sequence: each op as often as its weight, shuffled once so the
    kinds interleave evenly."""
    ops = [name for name, weight in mix.items() for _ in range(weight)]
    random.Random(seed).shuffle(ops)
    return ops


@dataclass
class DriverConfig:
    rate: float                    # confirms per second (0: closed-loop max)
    duration_s: float
    mix: dict[str, int]
    concurrency: int = 64          # closed-loop callers
    amount_min_fen: int = 100
    amount_max_fen: int = 500
    timeout_s: float = 5.0
    # Retries of an unanswered confirm with the same request id, as the app does (0: none).
    confirm_retries: int = 0
    # Retries of a shed confirm (RESOURCE_EXHAUSTED) after the server's retry-after hint,
    # capped at shed_retry_cap_s per wait, as the app does (0: a shed confirm is final).
    shed_retries: int = 1
    shed_retry_cap_s: float = 1.0
    max_inflight: int = 10_000
    seed: int = 1
    run_tag: str = "load"


@dataclass
class DriverState:
    issued: int = 0
    done: int = 0
    skipped: int = 0
    inflight: int = 0
    started_at: float = 0.0
    stopped_at: float = 0.0
    # Orders this run confirmed (reply seen), for order queries and the final tally.
    order_ids: list[str] = field(default_factory=list)
    unanswered_confirms: int = 0
    no_budget: int = 0
    # Confirms refused by admission on their last attempt (no order was made).
    shed_confirms: int = 0


class Driver:
    def __init__(self, clients: MeshClients, users: Sequence[TestUser], config: DriverConfig,
                 recorder: Recorder) -> None:
        if not users:
            raise ValueError("driver needs at least one test user")
        self.clients = clients
        self.users = list(users)
        self.config = config
        self.recorder = recorder
        self.state = DriverState()
        self._rng = random.Random(config.seed)
        self._user_turn = itertools.cycle(range(len(self.users)))
        # (owner uid, order id): GetOrder answers an order's owner only.
        self._recent: deque[tuple[int, str]] = deque(maxlen=5000)
        self._request_seq = itertools.count()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- scheduling ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def ops_per_second(self) -> float:
        mix = self.config.mix
        confirms = mix.get("confirm", 0)
        total = sum(mix.values())
        return self.config.rate * total / confirms if confirms else self.config.rate

    async def run(self) -> DriverState:
        loop = asyncio.get_running_loop()
        self.state.started_at = loop.time()
        try:
            if self.config.rate > 0:
                await self._open_loop()
            else:
                await self._closed_loop()
        finally:
            self.state.stopped_at = loop.time()
        if self._tasks:
            # In-flight calls finish (bounded by their deadline) so every scheduled call counts.
            await asyncio.wait(self._tasks, timeout=self.config.timeout_s * (self.config.confirm_retries + 2)
                               + self.config.shed_retry_cap_s * 1.5 * self.config.shed_retries)
        return self.state

    async def _open_loop(self) -> None:
        loop = asyncio.get_running_loop()
        cycle = op_cycle(self.config.mix, self.config.seed)
        per_second = self.ops_per_second()
        interval = 1.0 / per_second
        t0 = self.state.started_at
        end = t0 + self.config.duration_s
        n = 0
        while not self._stop.is_set():
            now = loop.time()
            if now >= end:
                break
            due = min(int((now - t0) * per_second) + 1, int(self.config.duration_s * per_second))
            while n < due:
                intended = t0 + n * interval
                kind = cycle[n % len(cycle)]
                n += 1
                if self.state.inflight >= self.config.max_inflight:
                    self.state.skipped += 1
                    self.recorder.record(OPS[kind], "CLIENT_OVERLOAD", 0.0)
                    continue
                self._spawn(kind, intended)
            if n >= int(self.config.duration_s * per_second):
                break
            delay = t0 + n * interval - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                except TimeoutError:
                    pass

    async def _closed_loop(self) -> None:
        loop = asyncio.get_running_loop()
        end = self.state.started_at + self.config.duration_s
        cycle = op_cycle(self.config.mix, self.config.seed)
        counter = itertools.count()

        async def caller() -> None:
            while not self._stop.is_set() and loop.time() < end:
                kind = cycle[next(counter) % len(cycle)]
                self.state.inflight += 1
                self.state.issued += 1
                await self._do(kind, loop.time())

        await asyncio.gather(*(caller() for _ in range(max(1, self.config.concurrency))))

    def _spawn(self, kind: str, intended: float) -> None:
        self.state.issued += 1
        self.state.inflight += 1
        task = asyncio.create_task(self._do(kind, intended))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the calls ----------------------------------------------------------------------

    async def _do(self, kind: str, intended: float) -> None:
        try:
            if kind == "page":
                code = await self._page()
            elif kind == "confirm":
                code = await self._confirm()
            else:
                code = await self._order()
        except grpc.aio.AioRpcError as err:
            code = SHED if is_shed(err) else err.code().name
        except Exception as exc:  # a bug in the tool must not stall the schedule
            code = f"CLIENT_{type(exc).__name__}"
        finally:
            self.state.inflight -= 1
            self.state.done += 1
        if code != "SKIP":
            latency_s = asyncio.get_running_loop().time() - intended
            self.recorder.record(OPS[kind], code, latency_s * 1000.0)

    def _pick_user(self) -> TestUser:
        return self.users[next(self._user_turn)]

    async def _page(self) -> str:
        user = self._pick_user()
        await self.clients.withdraw.GetWithdrawPage(
            withdraw_pb2.GetWithdrawPageRequest(uid=user.uid), timeout=self.config.timeout_s,
            metadata=self.clients.user_metadata(user.uid))
        return "OK"

    async def _confirm(self) -> str:
        amount = self._rng.randint(self.config.amount_min_fen, self.config.amount_max_fen)
        user = None
        for _ in range(len(self.users)):
            candidate = self._pick_user()
            if candidate.remaining_fen >= amount:
                user = candidate
                break
        if user is None:
            self.state.no_budget += 1
            return "SKIP"
        # Spent before the answer: an unanswered confirm may still have debited.
        user.remaining_fen -= amount
        request = withdraw_pb2.ConfirmWithdrawRequest(
            uid=user.uid, request_id=f"{self.config.run_tag}-{next(self._request_seq)}",
            amount_fen=amount, method_id=user.method_id)
        attempt = shed = 0
        # Whether an earlier attempt went unanswered: it may have debited, so a refusal of
        # a later attempt says nothing about the money.
        in_doubt = False
        while True:
            try:
                reply = await self.clients.withdraw.ConfirmWithdraw(
                    request, timeout=self.config.timeout_s, metadata=self.clients.user_metadata(user.uid))
            except grpc.aio.AioRpcError as err:
                if err.code() in _RETRYABLE and attempt < self.config.confirm_retries:
                    attempt += 1
                    in_doubt = True
                    await asyncio.sleep(0.2 * attempt)
                    continue
                if is_shed(err) and shed < self.config.shed_retries:
                    shed += 1
                    # Jittered, so the refused do not all come back in the same millisecond.
                    wait = retry_after_s(err, 0.1, self.config.shed_retry_cap_s)
                    await asyncio.sleep(wait * self._rng.uniform(1.0, 1.5))
                    continue
                if err.code() in _RETRYABLE or in_doubt:
                    self.state.unanswered_confirms += 1
                elif is_shed(err) or err.code() in (
                        grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    # A definite refusal took nothing (a shed confirm never reached a handler).
                    user.remaining_fen += amount
                    if is_shed(err):
                        self.state.shed_confirms += 1
                raise
            break
        self.state.order_ids.append(reply.order.order_id)
        self._recent.append((user.uid, reply.order.order_id))
        return "OK"

    async def _order(self) -> str:
        if self._recent:
            owner, order_id = self._recent[self._rng.randrange(len(self._recent))]
            await self.clients.withdraw.GetOrder(
                withdraw_pb2.GetOrderRequest(order_id=order_id), timeout=self.config.timeout_s,
                metadata=self.clients.user_metadata(owner))
        else:
            user = self._pick_user()
            await self.clients.withdraw.ListOrders(
                withdraw_pb2.ListOrdersRequest(uid=user.uid, page_size=10), timeout=self.config.timeout_s,
                metadata=self.clients.user_metadata(user.uid))
        return "OK"

