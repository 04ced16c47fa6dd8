"""Four-eyes gate changes: a SetGate request proposed by one operator is applied when a
different one approves it, through the same validation, compare-and-set and audit as a
direct SetGate, in one transaction with the approval."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from meshkit import validate
from meshkit.admin_store import Applied, ChangeStore
from meshkit.four_eyes import Change
from withdraw_svc.domain import (
    GATE_FIELDS,
    MAX_REASON_LEN,
    GateConfig,
    apply_gate_mask,
    gate_mask,
    validate_gate,
)
from withdraw_svc.gate import GateAdmin
from withdraw_svc.repository import gate_audit_json

KIND = "gate"


@dataclass(frozen=True)
class GateRequest:
    """A SetGate request, as stored in a proposal."""

    patch: GateConfig
    mask: tuple[str, ...]
    expected_version: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {name: getattr(self.patch, name) for name in GATE_FIELDS},
            "update_mask": list(self.mask), "expected_version": self.expected_version, "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateRequest:
        return cls(GateConfig(**data["config"]), tuple(data["update_mask"]), int(data["expected_version"]),
                   str(data["reason"]))


def checked_request(patch: GateConfig, mask: Sequence[str], expected_version: int,
                    reason: str) -> GateRequest:
    """SetGate's checks of the request itself, before anything is stored or locked; the
    merged configuration is judged again when it is applied."""
    validate.in_range("expected_version", expected_version, 0, validate.INT64_MAX, reason="BAD_VERSION")
    validate.text("reason", reason, max_len=MAX_REASON_LEN, multiline=True)
    names = gate_mask(mask)
    if names == GATE_FIELDS:
        validate_gate(patch)
    return GateRequest(patch, names, expected_version, reason)


class GateApprovals(Protocol):
    """The gate's compare-and-set in a transaction the change store opened (Repository)."""

    async def update_gate_in(
        self, conn: asyncpg.Connection, build: Callable[[GateConfig], GateConfig], expected_version: int,
        actor: str, reason: str, *, action: str | None,
    ) -> tuple[GateConfig, GateConfig]: ...


class GateChanges:
    def __init__(self, admin: GateAdmin, store: ChangeStore, gates: GateApprovals) -> None:
        self.admin = admin
        self.store = store
        # The approval's compare-and-set runs in the change store's transaction, on its
        # connection: the one place a connection crosses from one adapter to another.
        self.gates = gates

    async def propose(self, patch: GateConfig, mask: Sequence[str], expected_version: int, reason: str,
                      proposer: str) -> tuple[Change, GateRequest]:
        request = checked_request(patch, mask, expected_version, reason)
        change = await self.store.propose("gate", request.to_json(), reason, proposer)
        return change, request

    async def approve(self, change_id: str, approver: str) -> tuple[Change, GateConfig]:
        async def apply(conn: asyncpg.Connection, change: Change) -> Applied[GateConfig]:
            request = GateRequest.from_json(change.payload)
            old, new = await self.gates.update_gate_in(
                conn, lambda current: validate_gate(apply_gate_mask(current, request.patch, request.mask)),
                request.expected_version, approver,
                f"{request.reason} (change {change.change_id} proposed by {change.proposer})",
                action=None,
            )
            return Applied(gate_audit_json(old), gate_audit_json(new), new)

        change, config = await self.store.approve(change_id, approver, apply)
        self.admin.gate.config = config
        return change, config

    async def reject(self, change_id: str, actor: str, reason: str) -> Change:
        return await self.store.reject(change_id, actor, reason)

    async def list(self, page_size: int, page_token: str) -> tuple[list[Change], str]:
        return await self.store.list(page_size, page_token)


def request_of(change: Change) -> GateRequest:
    return GateRequest.from_json(change.payload)
