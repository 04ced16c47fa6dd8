"""The group-commit coalescer: concurrent submissions share batches, each caller gets its
own result, and a failing batch fails only the items that fail alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from withdraw_svc.coalesce import Coalescer


class Store:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def run_batch(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)  # a statement's latency, during which more submissions queue
        if any(i < 0 for i in items):
            raise ValueError("a negative item poisons the whole statement")
        return [i * 10 for i in items]

    async def run_one(self, item: int) -> int:
        self.batches.append([item])
        await asyncio.sleep(0)  # a statement yields to the loop, as a real one would
        if item < 0:
            raise ValueError(f"bad item {item}")
        return item * 10


async def test_concurrent_submissions_share_batches_and_keep_their_results() -> None:
    store = Store()
    c = Coalescer(store.run_batch, store.run_one, max_batch=50, max_in_flight=1)
    results = await asyncio.gather(*(c.submit(i) for i in range(200)))
    assert results == [i * 10 for i in range(200)]
    assert len(store.batches) < 20 and max(len(b) for b in store.batches) <= 50
    assert sorted(i for b in store.batches for i in b) == list(range(200))


async def test_a_lone_request_runs_at_once() -> None:
    store = Store()
    c = Coalescer(store.run_batch, store.run_one)
    assert await asyncio.wait_for(c.submit(7), timeout=1) == 70
    assert store.batches == [[7]]


async def test_a_failing_batch_fails_only_the_bad_item() -> None:
    store = Store()
    c = Coalescer(store.run_batch, store.run_one, max_in_flight=1)
    first = asyncio.create_task(c.submit(1))  # runs alone; the rest queue behind it
    await asyncio.sleep(0)  # one turn of the loop: the first submission starts its batch
    rest = [asyncio.create_task(c.submit(i)) for i in (2, -3, 4)]
    assert await first == 10
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == 20 and outcomes[2] == 40
    assert isinstance(outcomes[1], ValueError) and "bad item -3" in str(outcomes[1])
    with pytest.raises(ValueError):
        await c.submit(-1)
    assert await c.submit(5) == 50  # still usable afterwards


async def test_a_linger_gathers_company_and_a_full_batch_leaves_at_once() -> None:
    store = Store()
    c = Coalescer(store.run_batch, store.run_one, max_batch=4, max_in_flight=1, linger_s=0.05)
    first = asyncio.create_task(c.submit(1))
    await asyncio.sleep(0.01)  # well inside the linger: the first item still waits
    assert store.batches == []
    second = asyncio.create_task(c.submit(2))
    assert await asyncio.gather(first, second) == [10, 20]
    assert store.batches == [[1, 2]]
    assert (c.batches, c.items, c.largest) == (1, 2, 2)

    # A full batch does not wait out the linger.
    slow = Coalescer(store.run_batch, store.run_one, max_batch=3, max_in_flight=1, linger_s=10.0)
    results = await asyncio.wait_for(asyncio.gather(*(slow.submit(i) for i in (5, 6, 7))), timeout=1)
    assert results == [50, 60, 70] and store.batches[-1] == [5, 6, 7]
