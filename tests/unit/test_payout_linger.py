"""A worker's short read waits PAYOUT_BATCH_LINGER_MS for company, then tops the batch up
without blocking; a full read is paid at once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import replace

from payout_svc.batch import BatchPayoutProcessor
from payout_svc.domain import Delivery, Handled, OrderState
from payout_svc.worker import READ_BLOCK_MS, ChannelWorkers
from tests.unit.test_payout_processor import delivery_of, make_order


class BatchRecorder(BatchPayoutProcessor):
    def __init__(self) -> None:  # no ports: only the worker loop's calls reach it
        self.batches: list[list[Delivery]] = []

    async def handle_batch(self, deliveries: list[Delivery]) -> list[Handled]:
        self.batches.append(list(deliveries))
        return [Handled.ACKED] * len(deliveries)

    def paused(self, channel: str) -> bool:
        return False

    def pause_of(self, channel: str) -> float:
        return 0.0


class ScriptedReads:
    """Answers reads from a script; asks the loop to stop once the script is used up."""

    def __init__(self, replies: Sequence[list[Delivery]], stopping: asyncio.Event) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[int, int | None]] = []
        self.stopping = stopping

    async def read(self, channel: str, count: int, block_ms: int | None) -> list[Delivery]:
        self.calls.append((count, block_ms))
        if not self.replies:
            self.stopping.set()
            return []
        return self.replies.pop(0)


_ids = itertools.count(1)


def deliveries(n: int) -> list[Delivery]:
    return [replace(delivery_of(make_order(OrderState.PENDING_PAYOUT).as_job()), entry_id=f"{next(_ids)}-0")
            for _ in range(n)]


async def run_worker(replies: Sequence[list[Delivery]], batch_size: int,
                     linger_ms: int) -> tuple[ScriptedReads, BatchRecorder]:
    stopping = asyncio.Event()
    queue, processor = ScriptedReads(replies, stopping), BatchRecorder()
    loops = ChannelWorkers("bank", 1, queue, processor, None, 1000, 5000,  # type: ignore[arg-type]
                           batch_size=batch_size, linger_ms=linger_ms)
    await asyncio.wait_for(loops.work(stopping), 5.0)
    return queue, processor


async def test_a_short_read_lingers_then_tops_up_without_blocking() -> None:
    first, more = deliveries(1), deliveries(2)
    queue, processor = await run_worker([first, more], batch_size=4, linger_ms=20)
    assert queue.calls[:2] == [(4, READ_BLOCK_MS), (3, None)]
    assert processor.batches == [first + more]


async def test_a_full_read_is_paid_at_once() -> None:
    full, later = deliveries(4), deliveries(1)
    queue, processor = await run_worker([full, later], batch_size=4, linger_ms=20)
    # The second read is a blocking one for a new batch, not a top-up of the full one.
    assert queue.calls[:2] == [(4, READ_BLOCK_MS), (4, READ_BLOCK_MS)]
    assert processor.batches[0] == full


async def test_no_linger_pays_what_the_read_returned() -> None:
    first, second = deliveries(1), deliveries(1)
    queue, processor = await run_worker([first, second], batch_size=4, linger_ms=0)
    assert all(block == READ_BLOCK_MS for _, block in queue.calls)
    assert processor.batches[:2] == [first, second]
