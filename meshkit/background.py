"""Long-running loops of a service (relays, consumers, jobs) with a cooperative stop:
on shutdown a loop finishes the item in hand and exits; only stragglers are cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from meshkit.outage import OutageLog, outage_of

log = logging.getLogger(__name__)
_outages = OutageLog(log)

Loop = Callable[[asyncio.Event], Awaitable[None]]


class Background:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, loop: Loop) -> None:
        async def guarded() -> None:
            while not self.stopping.is_set():
                try:
                    await loop(self.stopping)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # A loop must survive a Redis wipe or a database restart.
                    if (outage := outage_of(exc)) is not None:
                        _outages.warn(f"background loop {name} (restarting in 1s)", outage)
                    else:
                        log.exception("background loop %s failed; restarting in 1s", name)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), timeout=1.0)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when asked to stop meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    return stopping.is_set()
