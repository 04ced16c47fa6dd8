"""The gateway's payout use case against an in-memory fake of its own port
(gateway_mock.ports), no PostgreSQL: a recorded order is answered from its record whatever
changed since, other content for it is a conflict, an unbound method pays nothing, and a
full channel refuses before anything is recorded. The SQL behind the port is tested
against PostgreSQL in tests/integration/test_gateway_*."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from gateway_mock.domain import (
    CapacityExceeded,
    ChannelFaults,
    Decision,
    Method,
    MethodNotBound,
    Payout,
    PayoutConflict,
    PayoutRequest,
    PayoutState,
)
from gateway_mock.ports import MethodsPage, NewPayout, Recorded
from gateway_mock.service import GatewayService
from meshkit.admin_store import AuditEntry

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class FakeStore:
    def __init__(self, methods: list[Method]) -> None:
        self.methods = {m.method_id: m for m in methods}
        self.payouts: dict[str, Payout] = {}

    def _record(self, request: PayoutRequest, decision: Decision) -> Payout:
        payout = Payout(request.order_id, request.uid, request.channel, request.method_id, request.amount_fen,
                        decision.state, decision.failure_reason, NOW, NOW, NOW)
        self.payouts[request.order_id] = payout
        return payout

    async def insert_payout(self, request: PayoutRequest, decision: Decision, async_delay_ms: int,
                            requested_at: datetime) -> Recorded:
        if request.order_id in self.payouts:  # the primary key keeps the first record
            return Recorded(self.payouts[request.order_id], created=False)
        return Recorded(self._record(request, decision), created=True)

    async def insert_payouts(self, items: Sequence[NewPayout], requested_at: datetime) -> dict[str, Payout]:
        raise NotImplementedError

    async def get_payouts(self, order_ids: Sequence[str]) -> dict[str, Payout]:
        return {o: self.payouts[o] for o in order_ids if o in self.payouts}

    async def get_payout(self, order_id: str) -> Payout | None:
        return self.payouts.get(order_id)

    async def complete_due(self, order_ids: list[str] | None = None, limit: int = 500) -> list[Payout]:
        return []

    async def list_payouts(self, start: datetime | None, end: datetime | None,
                           after: tuple[datetime, str] | None, limit: int) -> list[Payout]:
        raise NotImplementedError

    async def get_method(self, method_id: str) -> Method | None:
        return self.methods.get(method_id)

    async def insert_method(self, method: Method) -> Method:
        return self.methods.setdefault(method.method_id, method)

    async def list_methods(self, uid: int, limit: int, after: tuple[datetime, str] | None) -> MethodsPage:
        raise NotImplementedError

    async def load_faults(self) -> list[ChannelFaults]:
        return []

    async def save_faults(self, faults: ChannelFaults, actor: str) -> None:
        pass

    async def admin_audit(self, page_size: int, page_token: str) -> tuple[list[AuditEntry], str]:
        raise NotImplementedError


async def no_sleep(_seconds: float) -> None:
    return None


def gateway(store: FakeStore) -> GatewayService:
    return GatewayService(store, ("bank",), random.Random(7), clock=lambda: 100.0, sleep=no_sleep)


METHOD = Method("m-1", 7, "bank", "****1234")
REQUEST = PayoutRequest("o-1", 7, "bank", "m-1", 500)


async def test_a_recorded_order_is_answered_from_its_record() -> None:
    store = FakeStore([METHOD])
    service = gateway(store)
    first, replayed = await service.payout(REQUEST)
    assert (first.state, first.amount_fen, replayed) == (PayoutState.SUCCEEDED, 500, False)
    del store.methods["m-1"]  # the binding went away since: the record still answers
    again, replayed = await service.payout(REQUEST)
    assert again == first and replayed
    with pytest.raises(PayoutConflict):
        await service.payout(replace(REQUEST, amount_fen=501))
    assert list(store.payouts) == ["o-1"]


async def test_an_unbound_method_pays_nothing() -> None:
    store = FakeStore([METHOD])
    with pytest.raises(MethodNotBound):
        await gateway(store).payout(replace(REQUEST, uid=8))  # someone else's method
    assert store.payouts == {}


async def test_a_full_channel_refuses_before_recording() -> None:
    store = FakeStore([METHOD])
    service = gateway(store)
    service.faults["bank"] = ChannelFaults("bank", capacity_per_second=1)
    await service.payout(REQUEST)
    with pytest.raises(CapacityExceeded):
        await service.payout(replace(REQUEST, order_id="o-2"))
    assert list(store.payouts) == ["o-1"]
