"""What recon's use cases need from the peers' query RPCs (peers.py implements them over
gRPC; tests use fakes). An order the gateway has no payout for is absent / None."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from recon_svc.domain import EntryView, OrderView, PayoutView


class LedgerPort(Protocol):
    """account_svc: the entries of orders."""

    async def order_entries(self, order_id: str) -> list[EntryView]: ...

    async def orders_entries(self, order_ids: list[str]) -> dict[str, list[EntryView]]: ...


class GatewayPort(Protocol):
    """The gateway: the payouts of orders."""

    async def query_payout(self, order_id: str) -> PayoutView | None: ...

    async def query_payouts(self, order_ids: list[str]) -> dict[str, PayoutView]: ...


class OrdersPort(Protocol):
    """withdraw_svc: an order and when it last changed state."""

    async def get_order(self, order_id: str) -> tuple[OrderView, datetime | None] | None: ...
