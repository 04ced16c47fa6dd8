"""Per-replica admission for user-facing RPCs: a concurrency limit with a short wait queue
ordered by priority, refusing at once what would only queue into its deadline.

A request runs when fewer than `max_inflight` requests run. Otherwise it may wait, but only
if the wait this replica expects for it (requests ahead of it times the observed service
time, over the slots) fits its priority's share of `queue_s` and its remaining deadline;
else it is refused with a retry-after hint. A refusal takes no slot, no I/O and no lock, so
it is answered within the event loop's own latency whatever the load.

Pure asyncio: the gRPC interceptor adapts it (meshkit.interceptors)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Lower runs first and is shed last: a confirm moves money the user asked to move, a page
# view is repeated by the app's refresh, an order query by the next tap.
CONFIRM = 0
VIEW = 1
QUERY = 2

# Share of the wait target each priority may queue for: views give way before confirms
# wait, so under pressure the queue holds confirms and views are refused first.
_QUEUE_SHARE = {CONFIRM: 1.0, VIEW: 0.5, QUERY: 0.25}

_EWMA_ALPHA = 0.2
MIN_RETRY_AFTER_MS = 20
MAX_RETRY_AFTER_MS = 2000


class Refused(Exception):
    """Not admitted; ask again after `retry_after_ms`."""

    def __init__(self, reason: str, retry_after_ms: int) -> None:
        super().__init__(f"overloaded; retry after {retry_after_ms} ms ({reason})")
        self.reason = reason
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True)
class AdmissionSettings:
    enabled: bool
    max_inflight: int
    queue_s: float
    # Service time assumed before any call finished (the estimate follows observed calls).
    initial_service_s: float = 0.02


def parse_priorities(raw: list[str]) -> dict[str, int]:
    """["WithdrawService/ConfirmWithdraw:0", ...] -> {method: priority}. A method named
    "Service/Method" (the full gRPC path without its package) is shed by this replica;
    every other method is never refused."""
    out: dict[str, int] = {}
    for item in raw:
        method, sep, level = item.rpartition(":")
        if not sep or "/" not in method or level not in {"0", "1", "2"}:
            raise ValueError(f"admission method {item!r}: want Service/Method:<0|1|2>")
        out[method] = int(level)
    return out


def method_key(full_method: str) -> str:
    """"/mesh.withdraw.v1.WithdrawService/ConfirmWithdraw" -> "WithdrawService/ConfirmWithdraw"."""
    return full_method.rsplit(".", 1)[-1].lstrip("/")


class Ticket:
    __slots__ = ("started",)

    def __init__(self, started: float) -> None:
        self.started = started


class Admission:
    def __init__(self, settings: AdmissionSettings, clock: Callable[[], float] = time.monotonic) -> None:
        if settings.max_inflight < 1:
            raise ValueError("admission max_inflight must be >= 1")
        self.settings = settings
        self._clock = clock
        self.inflight = 0
        self.service_s = settings.initial_service_s
        self._seq = itertools.count()
        # (priority, arrival, future): the lowest priority value, then the oldest, runs next.
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        # Refusals by reason, and the longest one took from arrival (the replica's own
        # time; what the loop made the call wait before it arrived is not in it).
        self.refused: dict[str, int] = {}
        self.slowest_refusal_s: dict[str, float] = {}

    # -- estimates --------------------------------------------------------------------------

    def _ahead(self, priority: int) -> int:
        return sum(1 for p, _, fut in self._waiting if p <= priority and not fut.done())

    def expected_wait_s(self, priority: int) -> float:
        """Time until a request of `priority` arriving now would start: slots free at the
        observed service rate, and everything queued at its priority or above goes first."""
        if self.inflight < self.settings.max_inflight and not self._waiting:
            return 0.0
        return (self._ahead(priority) + 1) * self.service_s / self.settings.max_inflight

    def _retry_after_ms(self) -> int:
        # Long enough for what is queued now to drain, so the retry meets a shorter queue.
        drain_s = (len(self._waiting) + self.inflight) * self.service_s / self.settings.max_inflight
        wanted = max(self.settings.queue_s, drain_s) * 1000.0
        return int(min(MAX_RETRY_AFTER_MS, max(MIN_RETRY_AFTER_MS, round(wanted))))

    def _refuse(self, reason: str, arrived: float) -> Refused:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        took = self._clock() - arrived
        self.slowest_refusal_s[reason] = max(took, self.slowest_refusal_s.get(reason, 0.0))
        return Refused(reason, self._retry_after_ms())

    # -- admit / release ----------------------------------------------------------------------

    def check(self, priority: int, time_remaining_s: float | None) -> bool:
        """Admit at once (True, a slot is taken), queue (False), or raise Refused."""
        arrived = self._clock()
        wait_s = self.expected_wait_s(priority)
        if time_remaining_s is not None and time_remaining_s < wait_s + self.service_s:
            raise self._refuse("deadline too short", arrived)
        if wait_s == 0.0:
            self.inflight += 1
            return True
        if wait_s > self.settings.queue_s * _QUEUE_SHARE.get(priority, _QUEUE_SHARE[QUERY]):
            raise self._refuse("queue full", arrived)
        return False

    async def acquire(self, priority: int, time_remaining_s: float | None = None) -> Ticket:
        arrived = self._clock()
        if self.check(priority, time_remaining_s):
            return Ticket(self._clock())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._seq), future)
        heapq.heappush(self._waiting, entry)
        # The estimate may be wrong (a slow dependency): a waiter gives up after its budget
        # rather than wait into its deadline.
        budget = self.settings.queue_s * 2
        if time_remaining_s is not None:
            budget = min(budget, max(0.0, time_remaining_s - self.service_s))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=budget)
        except TimeoutError:
            if future.done() and not future.cancelled():
                # Granted just as the wait ran out: the slot is ours, use it.
                return Ticket(self._clock())
            future.cancel()
            self._drop(entry)
            raise self._refuse("waited too long", arrived) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release_slot()
            else:
                future.cancel()
                self._drop(entry)
            raise
        return Ticket(self._clock())

    def release(self, ticket: Ticket) -> None:
        elapsed = max(0.0, self._clock() - ticket.started)
        self.service_s += _EWMA_ALPHA * (elapsed - self.service_s)
        self._release_slot()

    def _release_slot(self) -> None:
        # The slot passes straight to the next waiter (inflight unchanged), so no newcomer
        # can overtake the queue between the release and the waiter waking.
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self.inflight -= 1

    def _drop(self, entry: tuple[int, int, asyncio.Future[None]]) -> None:
        try:
            self._waiting.remove(entry)
        except ValueError:
            return
        heapq.heapify(self._waiting)


class Gate:
    """What the interceptor holds: priorities by method key, and the replica's Admission."""

    def __init__(self, admission: Admission | None, priorities: Mapping[str, int]) -> None:
        self.admission = admission
        self.priorities = dict(priorities)

    def priority_of(self, full_method: str) -> int | None:
        if self.admission is None:
            return None
        return self.priorities.get(method_key(full_method))
