"""tests/waiting.py: the suite's one bounded wait returns what it waited for, or says what never came."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import eventually, never, poll, poll_blocking


async def test_eventually_returns_the_first_accepted_value_of_a_plain_or_async_probe() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter), lambda n: n >= 3, interval=0.001) == 3

    async def probe() -> int:
        return next(counter)
    assert await eventually(probe, lambda n: n >= 6, interval=0.001) == 6


async def test_eventually_fails_naming_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"after 0.05s waiting for the answer \(last value: 0\)"):
        await eventually(lambda: 0, timeout=0.05, interval=0.01, what="the answer")


async def test_poll_gives_the_last_value_at_the_deadline_instead_of_failing() -> None:
    assert await poll(lambda: [], timeout=0.02, interval=0.005) == []
    assert poll_blocking(lambda: "", timeout=0.02, interval=0.005) == ""
    assert poll_blocking(lambda: "x", timeout=0.02) == "x"


async def test_never_fails_as_soon_as_the_thing_happens_and_passes_when_it_does_not() -> None:
    counter = itertools.count()
    with pytest.raises(AssertionError, match="a verdict happened within 5"):
        await never(lambda: next(counter) >= 2, within=5, interval=0.001, what="a verdict")
    await never(lambda: False, within=0.02, interval=0.005)
