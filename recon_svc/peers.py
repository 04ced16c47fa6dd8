"""Client adapters: the peers' change feeds and their query-by-order RPCs, in domain terms.
Every call has a deadline; a peer that does not answer raises Unavailable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.errors import Unavailable
from meshkit.feed_records import read_change
from meshkit.settings import TlsSettings
from meshkit.timeconv import from_ts, utcnow
from meshkit.transport import dial
from recon_svc.domain import EntryView, OrderView, PayoutView, norm_enum

CALLER = "recon_svc"


@dataclass(frozen=True)
class FeedChange:
    cursor: str
    kind: str
    key: str
    payload: dict[str, Any]
    created_at: datetime


def _unavailable(peer: str, err: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(f"{peer} did not answer: {err.code().name} {err.details() or ''}".strip(),
                       reason="PEER_UNAVAILABLE")


def _entry(e: account_pb2.Entry) -> EntryView:
    return EntryView(norm_enum(account_pb2.EntryKind.Name(e.kind)), e.amount_fen, e.entry_id)


def _payout(p: gateway_pb2.Payout) -> PayoutView:
    return PayoutView.queried(norm_enum(gateway_pb2.PayoutState.Name(p.state)), p.amount_fen)


class FeedClient:
    def __init__(self, feed: str, address: str, tls: TlsSettings, timeout_s: float) -> None:
        self.feed = feed
        self.address = address
        self.channel = dial(address, tls, caller=CALLER)
        self.stub = feed_pb2_grpc.ChangeFeedServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def read(self, cursor: str, limit: int) -> tuple[list[FeedChange], str]:
        try:
            reply = await self.stub.ReadChanges(
                feed_pb2.ReadChangesRequest(cursor=cursor, limit=limit), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _unavailable(f"{self.feed} feed at {self.address}", err) from err
        now = utcnow()
        changes = []
        for c in reply.changes:
            kind, payload = read_change(c)
            changes.append(FeedChange(c.cursor, kind, c.key, payload, from_ts(c.create_time) or now))
        return changes, reply.next_cursor or cursor

    async def close(self) -> None:
        await self.channel.close()


class LedgerClient:
    """account_svc, asked about orders."""

    def __init__(self, address: str, tls: TlsSettings, timeout_s: float) -> None:
        self.channel = dial(address, tls, caller=CALLER)
        self.stub = account_pb2_grpc.AccountServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def order_entries(self, order_id: str) -> list[EntryView]:
        try:
            reply = await self.stub.GetOrderEntries(
                account_pb2.GetOrderEntriesRequest(order_id=order_id), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _unavailable("account_svc", err) from err
        return [_entry(e) for e in reply.entries]

    async def orders_entries(self, order_ids: list[str]) -> dict[str, list[EntryView]]:
        """The entries of many orders (at most the ledger's batch limit) in one call."""
        try:
            reply = await self.stub.GetOrderEntriesBatch(
                account_pb2.GetOrderEntriesBatchRequest(order_ids=order_ids), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _unavailable("account_svc", err) from err
        return {o.order_id: [_entry(e) for e in o.entries] for o in reply.orders}

    async def close(self) -> None:
        await self.channel.close()


class GatewayClient:
    def __init__(self, address: str, tls: TlsSettings, timeout_s: float) -> None:
        self.channel = dial(address, tls, caller=CALLER)
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def query_payout(self, order_id: str) -> PayoutView | None:
        try:
            reply = await self.stub.QueryPayout(
                gateway_pb2.QueryPayoutRequest(order_id=order_id), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable("gateway_mock", err) from err
        return _payout(reply.payout)

    async def query_payouts(self, order_ids: list[str]) -> dict[str, PayoutView]:
        """The payouts of many orders (at most the gateway's batch limit) in one call; an
        order without one is absent."""
        try:
            reply = await self.stub.QueryPayouts(
                gateway_pb2.QueryPayoutsRequest(order_ids=order_ids), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _unavailable("gateway_mock", err) from err
        return {p.order_id: _payout(p) for p in reply.payouts}

    async def close(self) -> None:
        await self.channel.close()


class OrdersClient:
    """withdraw_svc, asked about one order (CheckOrder only: the checker uses the feed)."""

    def __init__(self, address: str, tls: TlsSettings, timeout_s: float) -> None:
        self.channel = dial(address, tls, caller=CALLER)
        self.stub = withdraw_pb2_grpc.WithdrawServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def get_order(self, order_id: str) -> tuple[OrderView, datetime | None] | None:
        """The order and when it last changed state, or None when unknown."""
        try:
            reply = await self.stub.GetOrder(
                withdraw_pb2.GetOrderRequest(order_id=order_id), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable("withdraw_svc", err) from err
        o = reply.order
        view = OrderView(o.order_id, o.uid, o.amount_fen, norm_enum(withdraw_pb2.OrderState.Name(o.state)))
        return view, from_ts(o.update_time)

    async def close(self) -> None:
        await self.channel.close()
