"""The one bounded wait of the test suite: poll a condition until it holds or a deadline passes.

Tests wait on what they are waiting for (a row, a state, a log line), never for a fixed time.
A sleep left in a test is the subject of the test (a lease running out, a rate window
passing, an arrival schedule, a fake's latency) and says so where it stands.

- `eventually`: the accepted value, or an AssertionError naming what did not happen;
- `poll`: the accepted value or, at the deadline, the last one, for a caller that asserts on it
  with more to say (log tails, the spans it did see);
- `never`: fails as soon as something that must not happen does, within a window;
- `poll_blocking`: `poll` for a test with no event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
Probe = Callable[[], Awaitable[T] | T]


async def _value(probe: Probe[T]) -> T:
    value: Any = probe()
    if inspect.isawaitable(value):
        value = await value
    return value  # type: ignore[no-any-return]


async def poll(probe: Probe[T], accept: Callable[[T], object] = bool, *,
               timeout: float = 10.0, interval: float = 0.05) -> T:
    """Call `probe` (plain or async) every `interval` s until `accept(value)` or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = await _value(probe)
        if accept(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def eventually(probe: Probe[T], accept: Callable[[T], object] = bool, *,
                     timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """`poll`, failing with an AssertionError naming `what` and the last value at the deadline."""
    value = await poll(probe, accept, timeout=timeout, interval=interval)
    if not accept(value):
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
    return value


async def never(probe: Probe[object], *, within: float, interval: float = 0.05,
                what: str = "condition") -> None:
    """Poll `probe` for `within` s; fail as soon as it is truthy."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await _value(probe)
        assert not value, f"{what} happened within {within}s: {value!r}"
        await asyncio.sleep(interval)


def poll_blocking(probe: Callable[[], T], accept: Callable[[T], object] = bool, *,
                  timeout: float = 10.0, interval: float = 0.1) -> T:
    """`poll` blocking the thread between calls, for a test with no event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)
