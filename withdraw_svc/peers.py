"""Clients of account_svc, gateway_mock and payout_svc's channel statistics. Every call
carries a deadline; a failed call becomes a PeerError that says whether its outcome is known."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from mesh.account.v1 import account_pb2, account_pb2_grpc
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from meshkit.interceptors import RETRY_AFTER_HEADER
from meshkit.settings import TlsSettings
from meshkit.status import reason_of, status_code
from meshkit.transport import dial
from withdraw_svc.domain import ChannelLoad, GatewayView

# Codes that prove the callee refused the request as such (nothing happened). Anything else
# (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, CANCELLED, RESOURCE_EXHAUSTED...) may
# hide a write that committed: the outcome is unknown.
_DEFINITIVE = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED,
})

# account_svc's ErrorInfo reason for a debit larger than the balance (account_svc.domain.insufficient).
INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"


class PeerError(Exception):
    """A peer's failure: its status code and ErrorInfo reason (None when it sent none), which
    callers branch on, and its message, which they only pass on to people."""

    def __init__(self, peer: str, code: grpc.StatusCode, message: str, *, reason: str | None = None,
                 retry_after_ms: int = 0) -> None:
        super().__init__(f"{peer}: {code.name}: {message}")
        self.peer = peer
        self.code = code
        self.message = message
        self.reason = reason
        # The peer's `retry-after-ms` hint (a per-user rate limit), 0 when none.
        self.retry_after_ms = retry_after_ms

    @property
    def definitive(self) -> bool:
        return self.code in _DEFINITIVE


def _peer_error(peer: str, err: grpc.aio.AioRpcError) -> PeerError:
    code = err.code()
    hint = 0
    for key, value in err.trailing_metadata() or ():
        if key == RETRY_AFTER_HEADER and str(value).isdigit():
            hint = int(value)
    return PeerError(peer, code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
                     err.details() or "", reason=reason_of(err), retry_after_ms=hint)


def _item_error(peer: str, error: account_pb2.DeductError) -> PeerError:
    """A batch item's refusal, as the lone call's AioRpcError would have been read."""
    return PeerError(peer, status_code(error.code), error.message, reason=error.reason or None)


@dataclass(frozen=True)
class Credit:
    balance_fen: int


@dataclass(frozen=True)
class Method:
    method_id: str
    channel: str
    display: str


@dataclass(frozen=True)
class CachedMethods:
    """A user's methods as cached, and the methods version they were read under."""

    version: str
    methods: list[Method]


@dataclass(frozen=True)
class GatewayPayout:
    view: GatewayView
    failure_reason: str = ""


class AccountClient:
    def __init__(self, address: str, tls: TlsSettings, deadline_s: float) -> None:
        self.channel = dial(address, tls, caller="withdraw_svc")
        self.stub = account_pb2_grpc.AccountServiceStub(self.channel)
        self.deadline_s = deadline_s

    async def close(self) -> None:
        await self.channel.close()

    async def force_credit(self, uid: int, tokens: Sequence[str], timeout_s: float) -> Credit:
        try:
            reply = await self.stub.ForceCredit(
                account_pb2.ForceCreditRequest(uid=uid, tokens=list(tokens)), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as err:
            raise _peer_error("account_svc", err) from err
        return Credit(balance_fen=reply.balance_fen)

    async def balance(self, uid: int, timeout_s: float) -> int:
        try:
            reply = await self.stub.GetBalance(account_pb2.GetBalanceRequest(uid=uid), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise _peer_error("account_svc", err) from err
        return int(reply.balance_fen)

    async def deduct(self, order_id: str, uid: int, amount_fen: int) -> None:
        try:
            await self.stub.Deduct(
                account_pb2.DeductRequest(order_id=order_id, uid=uid, amount_fen=amount_fen),
                timeout=self.deadline_s,
            )
        except grpc.aio.AioRpcError as err:
            raise _peer_error("account_svc", err) from err

    async def deduct_one(self, item: tuple[str, int, int]) -> PeerError | None:
        """deduct((order_id, uid, amount_fen)), its refusal returned rather than raised."""
        try:
            await self.deduct(*item)
        except PeerError as err:
            return err
        return None

    async def deduct_many(self, items: Sequence[tuple[str, int, int]]) -> list[PeerError | None]:
        """Deduct each (order_id, uid, amount_fen) in one DeductBatch call: per item, None
        (debited now or before) or the PeerError a lone Deduct would have raised. A batch
        whose call failed answers that failure for every item: its outcome is unknown for
        all of them (or, when definitive, nothing was done for any)."""
        try:
            reply = await self.stub.DeductBatch(
                account_pb2.DeductBatchRequest(deducts=[
                    account_pb2.DeductRequest(order_id=o, uid=u, amount_fen=a) for o, u, a in items
                ]),
                timeout=self.deadline_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                # An account_svc older than DeductBatch ran nothing: ask item by item.
                return list(await asyncio.gather(*(self.deduct_one(i) for i in items)))
            error = _peer_error("account_svc", err)
            return [error] * len(items)
        if len(reply.results) != len(items):
            unknown = PeerError("account_svc", grpc.StatusCode.UNKNOWN,
                                f"DeductBatch answered {len(reply.results)} results for {len(items)} items")
            return [unknown] * len(items)
        return [
            _item_error("account_svc", r.error) if r.WhichOneof("outcome") == "error" else None
            for r in reply.results
        ]

    async def refund(self, order_id: str) -> str:
        """REFUNDED or VOIDED."""
        try:
            reply = await self.stub.Refund(account_pb2.RefundRequest(order_id=order_id),
                                           timeout=self.deadline_s)
        except grpc.aio.AioRpcError as err:
            raise _peer_error("account_svc", err) from err
        if reply.outcome == account_pb2.REFUND_OUTCOME_REFUNDED:
            return "REFUNDED"
        if reply.outcome == account_pb2.REFUND_OUTCOME_VOIDED:
            return "VOIDED"
        raise PeerError("account_svc", grpc.StatusCode.UNKNOWN, f"Refund answered outcome {reply.outcome}")

    async def debit_exists(self, order_id: str) -> bool:
        try:
            reply = await self.stub.GetOrderEntries(
                account_pb2.GetOrderEntriesRequest(order_id=order_id), timeout=self.deadline_s
            )
        except grpc.aio.AioRpcError as err:
            raise _peer_error("account_svc", err) from err
        return any(e.kind == account_pb2.ENTRY_KIND_DEBIT for e in reply.entries)


# The gateway's largest ListMethods page.
_METHODS_PAGE = 1000

_PAYOUT_VIEW = {
    gateway_pb2.PAYOUT_STATE_SUCCEEDED: GatewayView.SUCCEEDED,
    gateway_pb2.PAYOUT_STATE_FAILED: GatewayView.FAILED,
    gateway_pb2.PAYOUT_STATE_PROCESSING: GatewayView.PROCESSING,
}


class GatewayClient:
    """Reads only: withdraw_svc never calls Payout (payout_svc is the one path that pays,
    under the channel's rate limit)."""

    def __init__(self, address: str, tls: TlsSettings, deadline_s: float) -> None:
        self.channel = dial(address, tls, caller="withdraw_svc")
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.deadline_s = deadline_s

    async def close(self) -> None:
        await self.channel.close()

    async def methods(self, uid: int, timeout_s: float | None = None) -> list[Method]:
        """Every method bound to `uid`, all pages within one budget (a user has a handful:
        the first page is all of them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout_s or self.deadline_s)
        methods: list[Method] = []
        token = ""
        while True:
            try:
                reply = await self.stub.ListMethods(
                    gateway_pb2.ListMethodsRequest(uid=uid, page_size=_METHODS_PAGE, page_token=token),
                    timeout=max(0.001, deadline - loop.time()),
                )
            except grpc.aio.AioRpcError as err:
                raise _peer_error("gateway_mock", err) from err
            methods += [Method(m.method_id, m.channel, m.display) for m in reply.methods]
            token = reply.next_page_token
            if not token:
                return methods

    async def query(self, order_id: str) -> GatewayPayout:
        """The gateway's record; NOT_FOUND is an answer, not an error."""
        try:
            reply = await self.stub.QueryPayout(gateway_pb2.QueryPayoutRequest(order_id=order_id),
                                                timeout=self.deadline_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return GatewayPayout(GatewayView.NOT_FOUND)
            raise _peer_error("gateway_mock", err) from err
        return GatewayPayout(_PAYOUT_VIEW.get(reply.payout.state, GatewayView.UNKNOWN),
                             reply.payout.failure_reason)


    async def query_many(self, order_ids: Sequence[str]) -> dict[str, GatewayPayout]:
        """The gateway's record of each order (at most 1000) in one QueryPayouts call; an
        order without one is NOT_FOUND. Any failure of the call raises PeerError."""
        try:
            reply = await self.stub.QueryPayouts(
                gateway_pb2.QueryPayoutsRequest(order_ids=list(order_ids)), timeout=self.deadline_s)
        except grpc.aio.AioRpcError as err:
            raise _peer_error("gateway_mock", err) from err
        found = {o: GatewayPayout(GatewayView.NOT_FOUND) for o in order_ids}
        for payout in reply.payouts:
            found[payout.order_id] = GatewayPayout(
                _PAYOUT_VIEW.get(payout.state, GatewayView.UNKNOWN), payout.failure_reason)
        return found


class PayoutStatsClient:
    """payout_svc's GetChannelStats as the automatic release needs it (ChannelLoads): it
    holds the channels' rates and their streams, so it is the one that knows both."""

    def __init__(self, address: str, tls: TlsSettings, deadline_s: float) -> None:
        self.channel = dial(address, tls, caller="withdraw_svc")
        self.stub = payout_pb2_grpc.PayoutAdminServiceStub(self.channel)
        self.deadline_s = deadline_s

    async def close(self) -> None:
        await self.channel.close()

    async def channel_loads(self) -> list[ChannelLoad]:
        try:
            reply = await self.stub.GetChannelStats(payout_pb2.GetChannelStatsRequest(),
                                                    timeout=self.deadline_s)
        except grpc.aio.AioRpcError as err:
            raise _peer_error("payout_svc", err) from err
        # Delivered but unacknowledged entries are not paid yet either: both are backlog.
        return [
            ChannelLoad(c.channel, c.backlog + c.pending,
                        0.0 if c.paused else c.rate_limit_per_second, unlimited=c.unlimited)
            for c in reply.channels
        ]
