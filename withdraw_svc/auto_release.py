"""The gate's automatic release: every interval, raise release_k by one step while every
channel's payout backlog would drain in time (domain.decide_release), through the same
audited compare-and-set as a manual SetGate."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from meshkit.background import sleep_or_stop
from meshkit.errors import DomainError
from withdraw_svc.domain import (
    MAX_REASON_LEN,
    ChannelLoads,
    GateConfig,
    ReleaseStep,
    decide_release,
    release_hold,
    validate_gate,
)
from withdraw_svc.gate import GateAdmin
from withdraw_svc.peers import PeerError

log = logging.getLogger(__name__)

ACTOR = "auto-release"


class AutoRelease:
    def __init__(self, admin: GateAdmin, loads: ChannelLoads, interval_s: float) -> None:
        self.admin = admin
        self.loads = loads
        self.interval_s = interval_s
        self.ticks = 0                         # passes completed (tests wait on it)
        self.last: ReleaseStep | None = None   # the last decision taken
        self._unreachable = False
        self._last_hold = ""

    async def run(self, stopping: asyncio.Event) -> None:
        while not await sleep_or_stop(stopping, self.interval_s):
            await self.tick()

    async def tick(self) -> ReleaseStep | None:
        """One pass; the decision taken, or None when there was nothing to decide on."""
        try:
            return await self._tick()
        finally:
            self.ticks += 1

    async def _tick(self) -> ReleaseStep | None:
        config = await self.admin.gate.load()
        now = self.admin.gate.clock()
        held = release_hold(config, now)
        if held is not None:
            if config.auto_release:
                self._note_hold(held)
            return None
        try:
            loads = await self.loads.channel_loads()
        except PeerError as err:
            # Without the backlog there is no headroom to judge: hold, and say so once.
            if not self._unreachable:
                log.warning("auto-release holds at k %d/%d: payout_svc channel stats unavailable (%s)",
                            config.release_k, config.release_modulus, err)
                self._unreachable = True
            return None
        if self._unreachable:
            log.info("auto-release: payout_svc channel stats available again")
            self._unreachable = False
        step = decide_release(config, loads, now)
        if not step.advance:
            self._note_hold(step)
            return step
        self.last = step
        self._last_hold = ""
        await self._advance(config, step)
        return step

    def _note_hold(self, step: ReleaseStep) -> None:
        self.last = step
        if step.reason != self._last_hold:
            log.info("%s", step.reason)
            self._last_hold = step.reason

    async def _advance(self, seen: GateConfig, step: ReleaseStep) -> None:
        # expected_version is the version the decision was made on: of two replicas deciding
        # on it one commits and the other is refused, so a version is stepped at most once,
        # and a config an operator changed meanwhile is judged afresh on the next pass.
        try:
            await self.admin.update(
                lambda current: validate_gate(replace(current, release_k=step.release_k)),
                seen.version, ACTOR, step.reason[:MAX_REASON_LEN],
            )
        except DomainError as exc:
            log.info("auto-release step on version %d not applied: %s", seen.version, exc)
