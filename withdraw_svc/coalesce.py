"""Group commit for the confirm path: concurrent callers' rows go to PostgreSQL as one
statement and one commit, while each caller still gets its own row back.

Batches form naturally: while one batch is in flight the next accumulates, so a lone
request waits for nothing and a burst shares round trips and commits. With a linger, a
batch about to leave waits that long (or until it is full) for company first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], Awaitable[list[Out]]],
        run_one: Callable[[In], Awaitable[Out]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
        linger_s: float = 0.0,
    ) -> None:
        """run_batch returns one result per input, in order. run_one is the fallback that
        isolates a failing batch: each of its items is retried alone, so one bad row fails
        only its own caller."""
        self.run_batch = run_batch
        self.run_one = run_one
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.linger_s = linger_s
        self._full = asyncio.Event()
        # How batching goes: calls made, items carried, the largest batch so far.
        self.batches = 0
        self.items = 0
        self.largest = 0
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if len(self._queue) >= self.max_batch:
            self._full.set()
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self.linger_s > 0 and len(self._queue) < self.max_batch:
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.linger_s)
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._run(batch)
        finally:
            self._in_flight -= 1

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        items = [item for item, _ in batch]
        self.batches += 1
        self.items += len(items)
        self.largest = max(self.largest, len(items))
        try:
            results = await self.run_batch(items) if len(items) > 1 else [await self.run_one(items[0])]
        except Exception as exc:
            if len(items) == 1:
                _settle(batch[0][1], exc=exc)
                return
            log.warning("batch of %d failed (%s); retrying its items one by one", len(items), exc)
            outcomes = await asyncio.gather(*(self.run_one(i) for i in items), return_exceptions=True)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    _settle(future, exc=outcome)
                else:
                    _settle(future, result=outcome)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[Out], *, result: Out | None = None, exc: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled meanwhile; its row is written all the same
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
