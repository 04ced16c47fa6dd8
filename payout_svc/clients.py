"""Adapters for the peers payout_svc calls: withdraw_svc (owner of the orders) and the
payment gateway. They turn gRPC statuses into the domain's vocabulary."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.status import status_code
from payout_svc.domain import (
    AttemptFailed,
    Begun,
    DependencyDown,
    GatewayAnswer,
    GatewayStatus,
    Order,
    OrderMissing,
    OrderState,
    SettleConflict,
)

log = logging.getLogger(__name__)

_ORDER_STATE = {
    withdraw_pb2.ORDER_STATE_PENDING_DEDUCT: OrderState.PENDING_DEDUCT,
    withdraw_pb2.ORDER_STATE_PENDING_PAYOUT: OrderState.PENDING_PAYOUT,
    withdraw_pb2.ORDER_STATE_PAYING: OrderState.PAYING,
    withdraw_pb2.ORDER_STATE_SUCCEEDED: OrderState.SUCCEEDED,
    withdraw_pb2.ORDER_STATE_FAILED: OrderState.FAILED,
}
_GATEWAY_STATE = {
    gateway_pb2.PAYOUT_STATE_PROCESSING: GatewayStatus.PROCESSING,
    gateway_pb2.PAYOUT_STATE_SUCCEEDED: GatewayStatus.SUCCEEDED,
    gateway_pb2.PAYOUT_STATE_FAILED: GatewayStatus.FAILED,
}
# From withdraw_svc: the peer is away, or the call may or may not have taken effect. Its
# calls are idempotent (a read or a compare-and-set), so these are retried and in the end
# DependencyDown: the message waits, no attempt is counted. A PostgreSQL outage behind
# withdraw_svc arrives as UNAVAILABLE (meshkit.outage). INTERNAL is not here: it is a bug
# or an unclassified failure, which may well repeat for this order, and max_attempts is what
# keeps such a message from circling for ever.
_UNKNOWN_OUTCOME = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
# Gateway Payout answered UNAVAILABLE: nothing answered (connection refused or lost) or the
# gateway says it is away. Not the message's fault, so no attempt is used up (a gateway down
# for a while must not dead-letter every order): DependencyDown, and the message is left
# for redelivery. Safe even when a payout committed behind it (a reply lost after the
# commit is an UNAVAILABLE too): the order is PAYING by then, and a PAYING order is queried
# at the gateway before it is paid again (and the worker asks at once, see
# PayoutProcessor._after_no_answer).
_GATEWAY_AWAY = {grpc.StatusCode.UNAVAILABLE}
# A QueryPayout that gets no answer in time: nothing is at stake in a read, so a timeout
# is the gateway being away as well.
_GATEWAY_QUERY_AWAY = _GATEWAY_AWAY | {grpc.StatusCode.DEADLINE_EXCEEDED}
# Payout calls after which the gateway may have committed: an unknown outcome, never a
# failure, resolved by querying first on the next try. It counts as an attempt: the gateway
# took the call and did not answer it, which may be this order's doing (a poison order
# must reach the dead letters and the compensation job, not circle for ever). A gateway
# that hangs uses up one attempt: the next try's query, timing out as well, is
# DependencyDown, and the message waits uncounted until the gateway answers again. Only a
# gateway that answers queries but times out on this order's payout, three times, sends it
# to the dead letters. An internal error may come after its commit: just as unknown.
_GATEWAY_UNKNOWN = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
WITHDRAW_RETRY_DELAYS_S = (0.1, 0.3, 0.9)


def _order(pb: withdraw_pb2.Order) -> Order:
    state = _ORDER_STATE.get(pb.state)
    if state is None:
        raise ValueError(f"order {pb.order_id} has unknown state {pb.state}")
    return Order(pb.order_id, pb.uid, pb.channel, pb.method_id, pb.amount_fen, state, pb.failure_reason)


class WithdrawClient:
    """withdraw_svc: every call is idempotent (a read or a compare-and-set), so calls that
    find it away are retried in place a few times before the message is set aside."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self.orders = withdraw_pb2_grpc.WithdrawServiceStub(channel)
        self.coordination = withdraw_pb2_grpc.PayoutCoordinationServiceStub(channel)
        self.timeout_s = timeout_s

    async def get_order(self, order_id: str) -> Order:
        try:
            reply = await self._call(self.orders.GetOrder, withdraw_pb2.GetOrderRequest(order_id=order_id))
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise OrderMissing(order_id) from err
            raise
        return _order(reply.order)

    async def begin_payout(self, order_id: str) -> Begun:
        reply = await self._call(self.coordination.BeginPayout,
                                 withdraw_pb2.BeginPayoutRequest(order_id=order_id))
        return Begun(_order(reply.order), reply.acquired)

    async def settle_payout(self, order_id: str, state: OrderState, reason: str) -> Order:
        result = (withdraw_pb2.PAYOUT_RESULT_SUCCEEDED if state is OrderState.SUCCEEDED
                  else withdraw_pb2.PAYOUT_RESULT_FAILED)
        request = withdraw_pb2.SettlePayoutRequest(order_id=order_id, result=result, reason=reason)
        try:
            reply = await self._call(self.coordination.SettlePayout, request)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise SettleConflict(err.details() or "") from err
            raise
        return _order(reply.order)

    async def begin_payout_batch(self, order_ids: list[str]) -> list[Begun | Exception]:
        """begin_payout for each order id in one call: per item its Begun, or OrderMissing,
        or AttemptFailed with what withdraw_svc refused."""
        reply = await self._call(self.coordination.BeginPayoutBatch,
                                 withdraw_pb2.BeginPayoutBatchRequest(order_ids=order_ids))
        results: list[Begun | Exception] = []
        for order_id, item in zip(order_ids, reply.results, strict=True):
            if item.HasField("begun"):
                results.append(Begun(_order(item.begun.order), item.begun.acquired))
            elif status_code(item.error.code) is grpc.StatusCode.NOT_FOUND:
                results.append(OrderMissing(order_id))
            else:
                results.append(AttemptFailed(f"BeginPayout refused: {item.error.code} {item.error.message}"))
        return results

    async def settle_payout_batch(
        self, items: list[tuple[str, OrderState, str]]
    ) -> list[Order | Exception]:
        """settle_payout for each (order_id, state, reason) in one call: per item the
        settled Order, or SettleConflict, or DependencyDown (the gateway could not confirm a
        failure), or AttemptFailed with what withdraw_svc refused."""
        request = withdraw_pb2.SettlePayoutBatchRequest(settles=[
            withdraw_pb2.SettlePayoutRequest(
                order_id=order_id, reason=reason,
                result=(withdraw_pb2.PAYOUT_RESULT_SUCCEEDED if state is OrderState.SUCCEEDED
                        else withdraw_pb2.PAYOUT_RESULT_FAILED))
            for order_id, state, reason in items
        ])
        reply = await self._call(self.coordination.SettlePayoutBatch, request)
        results: list[Order | Exception] = []
        for item in reply.results:
            code = status_code(item.error.code)
            if item.HasField("settled"):
                results.append(_order(item.settled.order))
            elif code is grpc.StatusCode.FAILED_PRECONDITION:
                results.append(SettleConflict(item.error.message))
            elif code is grpc.StatusCode.UNAVAILABLE:
                # withdraw_svc could not ask the gateway to confirm a failure: nobody's fault.
                results.append(DependencyDown(f"withdraw_svc: {item.error.message}"))
            else:
                results.append(AttemptFailed(f"SettlePayout refused: {item.error.code} {item.error.message}"))
        return results

    async def _call(self, method: grpc.aio.UnaryUnaryMultiCallable, request: Any) -> Any:
        for delay in (*WITHDRAW_RETRY_DELAYS_S, None):
            try:
                return await method(request, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as err:
                if err.code() not in _UNKNOWN_OUTCOME:
                    raise
                if delay is None:
                    raise DependencyDown(f"withdraw_svc: {err.code().name} {err.details()}") from err
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


class GatewayClient:
    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self.stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        self.timeout_s = timeout_s

    async def payout(self, order: Order) -> GatewayAnswer:
        request = gateway_pb2.PayoutRequest(order_id=order.order_id, uid=order.uid, channel=order.channel,
                                            method_id=order.method_id, amount_fen=order.amount_fen)
        try:
            reply = await self.stub.Payout(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() in _GATEWAY_AWAY:
                raise _gateway_down(err) from err
            return _error_answer(err)
        return _answer(reply.payout)

    async def payout_batch(self, orders: list[Order]) -> list[GatewayAnswer]:
        """payout() for each order in one call: an answer per order. DependencyDown when
        the call got no answer at all (then none of them did)."""
        request = gateway_pb2.PayoutBatchRequest(payouts=[
            gateway_pb2.PayoutRequest(order_id=o.order_id, uid=o.uid, channel=o.channel,
                                      method_id=o.method_id, amount_fen=o.amount_fen)
            for o in orders
        ])
        try:
            reply = await self.stub.PayoutBatch(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() in _GATEWAY_AWAY:
                raise _gateway_down(err) from err
            return [_error_answer(err)] * len(orders)
        return [_answer(item.paid.payout) if item.HasField("paid")
                else _item_answer(status_code(item.error.code), item.error.message)
                for item in reply.results]

    async def query(self, order_id: str) -> GatewayAnswer:
        try:
            reply = await self.stub.QueryPayout(gateway_pb2.QueryPayoutRequest(order_id=order_id),
                                                timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return GatewayAnswer(GatewayStatus.NOT_FOUND)
            if err.code() in _GATEWAY_QUERY_AWAY:
                raise _gateway_down(err) from err
            return _error_answer(err)
        return _answer(reply.payout)


def _answer(payout: gateway_pb2.Payout) -> GatewayAnswer:
    status = _GATEWAY_STATE.get(payout.state)
    if status is None:
        return GatewayAnswer(GatewayStatus.UNKNOWN, f"unexpected payout state {payout.state}")
    return GatewayAnswer(status, payout.failure_reason)


def _gateway_down(err: grpc.aio.AioRpcError) -> DependencyDown:
    return DependencyDown(f"gateway: {err.code().name} {err.details()}")


def _item_answer(code: grpc.StatusCode, message: str) -> GatewayAnswer:
    """One item's refusal in a batch reply, read as the same status of a single Payout. An
    item UNAVAILABLE (the channel's transient error) came inside an answer: the gateway
    says it recorded nothing, so it is a definite "not now" (AWAY), not a lost reply."""
    if code is grpc.StatusCode.UNAVAILABLE:
        return GatewayAnswer(GatewayStatus.AWAY, f"UNAVAILABLE: {message}")
    return _code_answer(code, f"{code.name}: {message}")


def _error_answer(err: grpc.aio.AioRpcError) -> GatewayAnswer:
    return _code_answer(err.code(), f"{err.code().name}: {err.details()}")


def _code_answer(code: grpc.StatusCode, detail: str) -> GatewayAnswer:
    if code in _GATEWAY_UNKNOWN:
        return GatewayAnswer(GatewayStatus.UNKNOWN, detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return GatewayAnswer(GatewayStatus.BUSY, detail)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        # The gateway holds a record for this order id with other content: whatever it is,
        # it may have paid. Never a refusal that could fail the order.
        return GatewayAnswer(GatewayStatus.UNKNOWN, detail)
    return GatewayAnswer(GatewayStatus.REFUSED, detail)
