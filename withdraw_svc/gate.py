"""The gate: the configuration in force on this replica, and its audited changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from meshkit import paging, validate
from meshkit.background import sleep_or_stop
from meshkit.four_eyes import direct_change_refused
from meshkit.outage import OutageLog
from withdraw_svc.domain import (
    GATE_FIELDS,
    MAX_REASON_LEN,
    GateConfig,
    GateDecision,
    apply_gate_mask,
    evaluate_gate,
    gate_mask,
    validate_gate,
)
from withdraw_svc.ports import GateStore
from withdraw_svc.records import GateAuditPage

log = logging.getLogger(__name__)
_outages = OutageLog(log)

Clock = Callable[[], datetime]

def system_clock() -> datetime:
    return datetime.now(UTC)


class GateHolder:
    """The gate configuration in force on this replica, re-read from PostgreSQL every few
    seconds so a SetGate on any replica reaches all of them without a restart."""

    def __init__(self, repo: GateStore, refresh_s: float, clock: Clock = system_clock) -> None:
        self.repo = repo
        self.refresh_s = refresh_s
        self.clock = clock
        self.config = GateConfig()

    async def load(self) -> GateConfig:
        self.config = await self.repo.load_gate()
        return self.config

    async def refresh_loop(self, stopping: asyncio.Event) -> None:
        while not await sleep_or_stop(stopping, self.refresh_s):
            try:
                await self.load()
            except Exception as exc:
                _outages.failed(exc, "gate refresh failed; keeping version %d", self.config.version)

    def evaluate(self, uid: int) -> GateDecision:
        return evaluate_gate(self.config, uid, self.clock())


class GateAdmin:
    def __init__(self, repo: GateStore, gate: GateHolder, four_eyes: bool = True) -> None:
        self.repo = repo
        self.gate = gate
        self.four_eyes = four_eyes   # direct SetGate refused (meshkit/four_eyes.py)

    async def get(self, uid: int) -> tuple[GateConfig, GateDecision | None]:
        validate.in_range("uid", uid, 0, validate.INT64_MAX, reason="BAD_UID")  # 0: no user
        config = await self.gate.load()
        return config, (self.gate.evaluate(uid) if uid > 0 else None)

    async def set(
        self, patch: GateConfig, mask: Sequence[str], expected_version: int, actor: str, reason: str
    ) -> GateConfig:
        """Change the fields `mask` names to their values in `patch` (AIP-134), audited.
        Refused under four-eyes: the change goes through GateChanges instead."""
        if self.four_eyes:
            raise direct_change_refused("a gate change", "ProposeGateChange", "ApproveGateChange")
        validate.in_range("expected_version", expected_version, 0, validate.INT64_MAX, reason="BAD_VERSION")
        validate.text("reason", reason, max_len=MAX_REASON_LEN, multiline=True)
        names = gate_mask(mask)
        # Refuse a bad patch before taking the row lock; the merged result is judged again.
        if names == GATE_FIELDS:
            validate_gate(patch)
        return await self.update(
            lambda current: validate_gate(apply_gate_mask(current, patch, names)),
            expected_version, actor, reason,
        )

    async def update(
        self, build: Callable[[GateConfig], GateConfig], expected_version: int, actor: str, reason: str
    ) -> GateConfig:
        """One audited compare-and-set of the gate: SetGate's and the automatic release's."""
        stored = await self.repo.update_gate(build, expected_version, actor, reason)
        self.gate.config = stored
        log.info("gate set to version %d by %s: %s (%s)", stored.version, actor, stored.to_json(), reason)
        return stored

    async def audit(self, page_size: int, page_token: str) -> GateAuditPage:
        size = paging.PERSON_LIST.of(page_size)
        return await self.repo.gate_audit(size, paging.row_of(page_token))
