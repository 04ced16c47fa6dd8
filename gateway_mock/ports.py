"""The ports of the gateway's use cases: what they need from storage and the typed records
it answers with. gateway_mock.repository is the PostgreSQL adapter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway_mock.domain import ChannelFaults, Decision, Method, Payout, PayoutRequest
from meshkit.admin_store import AuditEntry


@dataclass(frozen=True)
class Recorded:
    """The payout stored for an order, and whether this call created it."""

    payout: Payout
    created: bool


@dataclass(frozen=True)
class NewPayout:
    """A payout to record, with the outcome drawn for it."""

    request: PayoutRequest
    decision: Decision
    async_delay_ms: int


class PayoutsPort(Protocol):
    async def insert_payout(self, request: PayoutRequest, decision: Decision, async_delay_ms: int,
                            requested_at: datetime) -> Recorded: ...
    async def insert_payouts(self, items: Sequence[NewPayout],
                             requested_at: datetime) -> dict[str, Payout]: ...
    async def get_payouts(self, order_ids: Sequence[str]) -> dict[str, Payout]: ...
    async def get_payout(self, order_id: str) -> Payout | None: ...
    async def complete_due(self, order_ids: list[str] | None = None, limit: int = 500) -> list[Payout]: ...
    async def list_payouts(self, start: datetime | None, end: datetime | None,
                           after: tuple[datetime, str] | None, limit: int) -> list[Payout]: ...


@dataclass(frozen=True)
class MethodsPage:
    """A page of a user's bound methods, and the token of the next page (empty on the last)."""

    methods: list[Method]
    next_page_token: str


class MethodsPort(Protocol):
    async def get_method(self, method_id: str) -> Method | None: ...
    async def insert_method(self, method: Method) -> Method: ...
    async def list_methods(self, uid: int, limit: int, after: tuple[datetime, str] | None) -> MethodsPage: ...


class MethodEvents(Protocol):
    """Tells the mesh a user's bound methods changed, after the change committed."""

    async def bound(self, uid: int) -> None: ...


class FaultsPort(Protocol):
    async def load_faults(self) -> list[ChannelFaults]: ...
    async def save_faults(self, faults: ChannelFaults, actor: str) -> None: ...
    async def admin_audit(self, page_size: int, page_token: str) -> tuple[list[AuditEntry], str]: ...


class GatewayStore(PayoutsPort, MethodsPort, FaultsPort, Protocol):
    """Everything the gateway stores (one schema, one adapter)."""
