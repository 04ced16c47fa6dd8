"""gRPC <-> domain for GatewayService and GatewayAdminService."""

from __future__ import annotations

import grpc

from gateway_mock.domain import ChannelFaults, Method, Payout, PayoutRequest, PayoutState
from gateway_mock.service import GatewayService
from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from meshkit.admin_pb import audit_entry_pb
from meshkit.errors import DomainError
from meshkit.identity import caller_of
from meshkit.timeconv import from_request_ts, to_ts

_STATE = {
    PayoutState.PROCESSING: gateway_pb2.PAYOUT_STATE_PROCESSING,
    PayoutState.SUCCEEDED: gateway_pb2.PAYOUT_STATE_SUCCEEDED,
    PayoutState.FAILED: gateway_pb2.PAYOUT_STATE_FAILED,
}


def payout_pb(p: Payout) -> gateway_pb2.Payout:
    return gateway_pb2.Payout(
        order_id=p.order_id, uid=p.uid, channel=p.channel, method_id=p.method_id,
        amount_fen=p.amount_fen, state=_STATE[p.state], failure_reason=p.failure_reason,
        create_time=to_ts(p.created_at), complete_time=to_ts(p.completed_at),
        request_time=to_ts(p.requested_at),
    )


def method_pb(m: Method) -> gateway_pb2.PayoutMethod:
    return gateway_pb2.PayoutMethod(method_id=m.method_id, uid=m.uid, channel=m.channel,
                                    display=m.account_masked)


def faults_pb(f: ChannelFaults) -> gateway_pb2.ChannelFaults:
    return gateway_pb2.ChannelFaults(
        channel=f.channel, capacity_per_second=f.capacity_per_second,
        latency_min_ms=f.latency_min_ms, latency_max_ms=f.latency_max_ms,
        transient_error_rate=f.transient_error_rate, definitive_failure_rate=f.definitive_failure_rate,
        async_rate=f.async_rate, async_delay_ms=f.async_delay_ms, lost_reply_rate=f.lost_reply_rate,
        async_failure_rate=f.async_failure_rate,
    )


def faults_of(pb: gateway_pb2.ChannelFaults) -> ChannelFaults:
    return ChannelFaults(
        channel=pb.channel, capacity_per_second=pb.capacity_per_second,
        latency_min_ms=pb.latency_min_ms, latency_max_ms=pb.latency_max_ms,
        transient_error_rate=pb.transient_error_rate, definitive_failure_rate=pb.definitive_failure_rate,
        async_rate=pb.async_rate, async_delay_ms=pb.async_delay_ms, lost_reply_rate=pb.lost_reply_rate,
        async_failure_rate=pb.async_failure_rate,
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, service: GatewayService) -> None:
        self.service = service

    async def Payout(
        self, request: gateway_pb2.PayoutRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PayoutResponse:
        payout, replayed = await self.service.payout(PayoutRequest(
            order_id=request.order_id, uid=request.uid, channel=request.channel,
            method_id=request.method_id, amount_fen=request.amount_fen,
        ))
        return gateway_pb2.PayoutResponse(payout=payout_pb(payout), replayed=replayed)

    async def PayoutBatch(
        self, request: gateway_pb2.PayoutBatchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PayoutBatchResponse:
        outcomes = await self.service.payout_batch([
            PayoutRequest(order_id=p.order_id, uid=p.uid, channel=p.channel, method_id=p.method_id,
                          amount_fen=p.amount_fen)
            for p in request.payouts
        ])
        results = []
        for outcome in outcomes:
            if isinstance(outcome, DomainError):
                results.append(gateway_pb2.PayoutBatchResult(error=gateway_pb2.PayoutError(
                    code=outcome.code.value, reason=outcome.reason, message=outcome.message)))
            else:
                payout, replayed = outcome
                results.append(gateway_pb2.PayoutBatchResult(
                    paid=gateway_pb2.PayoutResponse(payout=payout_pb(payout), replayed=replayed)))
        return gateway_pb2.PayoutBatchResponse(results=results)

    async def QueryPayout(
        self, request: gateway_pb2.QueryPayoutRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.QueryPayoutResponse:
        payout = await self.service.query_payout(request.order_id)
        return gateway_pb2.QueryPayoutResponse(payout=payout_pb(payout))

    async def QueryPayouts(
        self, request: gateway_pb2.QueryPayoutsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.QueryPayoutsResponse:
        payouts, missing = await self.service.query_payouts(list(request.order_ids))
        return gateway_pb2.QueryPayoutsResponse(payouts=[payout_pb(p) for p in payouts],
                                                missing_order_ids=missing)

    async def ListPayouts(
        self, request: gateway_pb2.ListPayoutsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListPayoutsResponse:
        payouts, token = await self.service.list_payouts(
            from_request_ts("start_time", request.start_time), from_request_ts("end_time", request.end_time),
            request.page_token, request.page_size)
        return gateway_pb2.ListPayoutsResponse(payouts=[payout_pb(p) for p in payouts], next_page_token=token)

    async def ListMethods(
        self, request: gateway_pb2.ListMethodsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListMethodsResponse:
        methods, token = await self.service.list_methods(request.uid, request.page_size, request.page_token)
        return gateway_pb2.ListMethodsResponse(methods=[method_pb(m) for m in methods], next_page_token=token)

    async def BindMethod(
        self, request: gateway_pb2.BindMethodRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.BindMethodResponse:
        method = await self.service.bind_method(
            request.uid, request.channel, request.account, request.method_id)
        return gateway_pb2.BindMethodResponse(method=method_pb(method))


class GatewayAdminServicer(gateway_pb2_grpc.GatewayAdminServiceServicer):
    def __init__(self, service: GatewayService) -> None:
        self.service = service

    async def SetChannelFaults(
        self, request: gateway_pb2.SetChannelFaultsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SetChannelFaultsResponse:
        faults = await self.service.set_faults(faults_of(request.faults), caller_of(context))
        return gateway_pb2.SetChannelFaultsResponse(faults=faults_pb(faults))

    async def ListAdminAudit(
        self, request: gateway_pb2.ListAdminAuditRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListAdminAuditResponse:
        entries, token = await self.service.admin_audit(request.page_size, request.page_token)
        return gateway_pb2.ListAdminAuditResponse(entries=[audit_entry_pb(e) for e in entries],
                                                  next_page_token=token)

    async def GetChannelFaults(
        self, request: gateway_pb2.GetChannelFaultsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetChannelFaultsResponse:
        faults = self.service.get_faults(request.channel)
        return gateway_pb2.GetChannelFaultsResponse(faults=faults_pb(faults))
