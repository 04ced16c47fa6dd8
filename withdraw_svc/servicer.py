"""Protobuf <-> domain for the three withdraw services. No rules here."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from mesh.withdraw.v1 import withdraw_pb2, withdraw_pb2_grpc
from meshkit.admin_pb import audit_entry_pb, review_pb
from meshkit.errors import DomainError
from meshkit.four_eyes import Change
from meshkit.identity import caller_of
from meshkit.timeconv import to_ts
from meshkit.user_auth import UserAuth
from meshkit.user_limits import retry_hint
from withdraw_svc.admin_audit import WithdrawAudit
from withdraw_svc.compensation import Compensation, CompensationAction
from withdraw_svc.confirm import ConfirmWithdrawal
from withdraw_svc.coordination import PayoutCoordinator
from withdraw_svc.domain import (
    ConfirmInput,
    GateConfig,
    GateDecision,
    Order,
    OrderState,
    RefundState,
    compensation_min_age,
)
from withdraw_svc.gate import GateAdmin
from withdraw_svc.gate_changes import GateChanges, request_of
from withdraw_svc.order_queries import OrderQueries
from withdraw_svc.peers import Method
from withdraw_svc.withdraw_page import WithdrawPage

_STATE = {
    OrderState.PENDING_DEDUCT: withdraw_pb2.ORDER_STATE_PENDING_DEDUCT,
    OrderState.PENDING_PAYOUT: withdraw_pb2.ORDER_STATE_PENDING_PAYOUT,
    OrderState.PAYING: withdraw_pb2.ORDER_STATE_PAYING,
    OrderState.SUCCEEDED: withdraw_pb2.ORDER_STATE_SUCCEEDED,
    OrderState.FAILED: withdraw_pb2.ORDER_STATE_FAILED,
}
_REFUND = {
    RefundState.NONE: withdraw_pb2.REFUND_STATE_UNSPECIFIED,
    RefundState.PENDING: withdraw_pb2.REFUND_STATE_PENDING,
    RefundState.REFUNDED: withdraw_pb2.REFUND_STATE_REFUNDED,
    RefundState.VOIDED: withdraw_pb2.REFUND_STATE_VOIDED,
}
_RESULT = {
    withdraw_pb2.PAYOUT_RESULT_SUCCEEDED: OrderState.SUCCEEDED,
    withdraw_pb2.PAYOUT_RESULT_FAILED: OrderState.FAILED,
}


def order_pb(order: Order) -> withdraw_pb2.Order:
    return withdraw_pb2.Order(
        order_id=order.order_id, uid=order.uid, request_id=order.request_id,
        amount_fen=order.amount_fen, channel=order.channel, method_id=order.method_id,
        state=_STATE[order.state], failure_reason=order.failure_reason,
        create_time=to_ts(order.created_at), update_time=to_ts(order.updated_at),
        refund_state=order.refund_state.value, refund=_REFUND[order.refund_state],
        history=[
            withdraw_pb2.StateChange(
                from_state=_STATE[h.from_state] if h.from_state else withdraw_pb2.ORDER_STATE_UNSPECIFIED,
                to_state=_STATE[h.to_state], reason=h.reason, change_time=to_ts(h.at),
            )
            for h in order.history
        ],
    )


def gate_pb(decision: GateDecision) -> withdraw_pb2.Gate:
    gate = withdraw_pb2.Gate(open=decision.open, message=decision.message)
    if decision.open_time is not None:
        gate.open_time.CopyFrom(to_ts(decision.open_time))
    return gate


def gate_config_pb(config: GateConfig) -> withdraw_pb2.GateConfig:
    return withdraw_pb2.GateConfig(
        timezone=config.timezone, closed_start=config.closed_start, closed_end=config.closed_end,
        release_modulus=config.release_modulus, release_k=config.release_k, version=config.version,
        bind_prompt=config.bind_prompt, auto_release=config.auto_release,
        auto_release_drain_seconds=config.auto_release_drain_seconds,
        auto_release_step=config.auto_release_step,
    )


def gate_config_of(pb: withdraw_pb2.GateConfig) -> GateConfig:
    return GateConfig(
        timezone=pb.timezone, closed_start=pb.closed_start.strip(), closed_end=pb.closed_end.strip(),
        release_modulus=pb.release_modulus, release_k=pb.release_k, bind_prompt=pb.bind_prompt,
        auto_release=pb.auto_release, auto_release_drain_seconds=pb.auto_release_drain_seconds,
        auto_release_step=pb.auto_release_step,
    )


def gate_change_pb(change: Change) -> withdraw_pb2.GateChange:
    request = request_of(change)
    config = gate_config_pb(request.patch)
    config.version = 0  # not part of a request
    return withdraw_pb2.GateChange(review=review_pb(change), request=withdraw_pb2.SetGateRequest(
        config=config, expected_version=request.expected_version, reason=request.reason,
        update_mask=FieldMask(paths=list(request.mask)),
    ))


def method_pb(method: Method) -> withdraw_pb2.PayoutMethod:
    return withdraw_pb2.PayoutMethod(
        method_id=method.method_id, channel=method.channel, display=method.display
    )


def action_pb(action: CompensationAction) -> withdraw_pb2.CompensationAction:
    return withdraw_pb2.CompensationAction(
        order_id=action.order_id, from_state=_STATE[action.from_state], action=action.action.value,
        detail=action.detail,
    )


class WithdrawServicer(withdraw_pb2_grpc.WithdrawServiceServicer):
    """Every RPC here is user-facing: it acts for the session token's uid (meshkit.user_auth)."""

    def __init__(self, page: WithdrawPage, confirm: ConfirmWithdrawal, queries: OrderQueries,
                 users: UserAuth) -> None:
        self.page = page
        self.confirm = confirm
        self.queries = queries
        self.users = users

    async def GetWithdrawPage(
        self, request: withdraw_pb2.GetWithdrawPageRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.GetWithdrawPageResponse:
        uid = self.users.uid(context, "WithdrawService/GetWithdrawPage", request.uid)
        page = await self.page.page(uid, list(request.tokens))
        return withdraw_pb2.GetWithdrawPageResponse(
            balance_fen=page.balance_fen, balance_stale=page.balance_stale,
            min_amount_fen=page.min_fen, max_amount_fen=page.max_fen, gate=gate_pb(page.gate),
            methods=[method_pb(m) for m in page.methods], methods_stale=page.methods_stale,
            recent_orders=[order_pb(o) for o in page.recent],
        )

    async def ConfirmWithdraw(
        self, request: withdraw_pb2.ConfirmWithdrawRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ConfirmWithdrawResponse:
        uid = self.users.uid(context, "WithdrawService/ConfirmWithdraw", request.uid)
        with retry_hint(context):
            order, replayed = await self.confirm.confirm(ConfirmInput(
                uid=uid, request_id=request.request_id, amount_fen=request.amount_fen,
                method_id=request.method_id, tokens=tuple(request.tokens),
            ))
        return withdraw_pb2.ConfirmWithdrawResponse(order=order_pb(order), replayed=replayed)

    async def GetOrder(
        self, request: withdraw_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.GetOrderResponse:
        owner = self.users.signed_in(context, "WithdrawService/GetOrder")
        order = await self.queries.get_order(request.order_id, owner)
        return withdraw_pb2.GetOrderResponse(order=order_pb(order))

    async def ListOrders(
        self, request: withdraw_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ListOrdersResponse:
        uid = self.users.uid(context, "WithdrawService/ListOrders", request.uid)
        orders, token = await self.queries.list_orders(uid, request.page_size, request.page_token)
        return withdraw_pb2.ListOrdersResponse(orders=[order_pb(o) for o in orders], next_page_token=token)


class PayoutCoordinationServicer(withdraw_pb2_grpc.PayoutCoordinationServiceServicer):
    def __init__(self, coordinator: PayoutCoordinator) -> None:
        self.coordinator = coordinator

    async def BeginPayout(
        self, request: withdraw_pb2.BeginPayoutRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.BeginPayoutResponse:
        order, acquired = await self.coordinator.begin_payout(request.order_id)
        return withdraw_pb2.BeginPayoutResponse(order=order_pb(order), acquired=acquired)

    async def SettlePayout(
        self, request: withdraw_pb2.SettlePayoutRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.SettlePayoutResponse:
        order, replayed = await self.coordinator.settle_payout(
            request.order_id, _RESULT.get(request.result), request.reason
        )
        return withdraw_pb2.SettlePayoutResponse(order=order_pb(order), replayed=replayed)

    async def GetOrderStates(
        self, request: withdraw_pb2.GetOrderStatesRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.GetOrderStatesResponse:
        orders = await self.coordinator.orders_of(list(request.order_ids))
        return withdraw_pb2.GetOrderStatesResponse(
            states={order_id: _STATE[order.state] for order_id, order in orders.items()})

    async def BeginPayoutBatch(
        self, request: withdraw_pb2.BeginPayoutBatchRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.BeginPayoutBatchResponse:
        outcomes = await self.coordinator.begin_payout_batch(list(request.order_ids))
        results = []
        for outcome in outcomes:
            if isinstance(outcome, DomainError):
                results.append(withdraw_pb2.BeginPayoutResult(error=_item_error(outcome)))
            else:
                order, acquired = outcome
                results.append(withdraw_pb2.BeginPayoutResult(
                    begun=withdraw_pb2.BeginPayoutResponse(order=order_pb(order), acquired=acquired)))
        return withdraw_pb2.BeginPayoutBatchResponse(results=results)

    async def SettlePayoutBatch(
        self, request: withdraw_pb2.SettlePayoutBatchRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.SettlePayoutBatchResponse:
        outcomes = await self.coordinator.settle_payout_batch(
            [(s.order_id, _RESULT.get(s.result), s.reason) for s in request.settles]
        )
        results = []
        for outcome in outcomes:
            if isinstance(outcome, DomainError):
                results.append(withdraw_pb2.SettlePayoutResult(error=_item_error(outcome)))
            else:
                order, replayed = outcome
                results.append(withdraw_pb2.SettlePayoutResult(
                    settled=withdraw_pb2.SettlePayoutResponse(order=order_pb(order), replayed=replayed)))
        return withdraw_pb2.SettlePayoutBatchResponse(results=results)


def _item_error(error: DomainError) -> withdraw_pb2.PayoutItemError:
    return withdraw_pb2.PayoutItemError(code=error.code.value, reason=error.reason, message=error.message)


class WithdrawAdminServicer(withdraw_pb2_grpc.WithdrawAdminServiceServicer):
    def __init__(self, admin: GateAdmin, compensation: Compensation, changes: GateChanges,
                 audit: WithdrawAudit) -> None:
        self.admin = admin
        self.compensation = compensation
        self.changes = changes
        self.audit_log = audit

    async def GetGate(
        self, request: withdraw_pb2.GetGateRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.GetGateResponse:
        config, decision = await self.admin.get(request.uid)
        reply = withdraw_pb2.GetGateResponse(config=gate_config_pb(config))
        if decision is not None:
            reply.gate.CopyFrom(gate_pb(decision))
        return reply

    async def SetGate(
        self, request: withdraw_pb2.SetGateRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.SetGateResponse:
        config = await self.admin.set(
            gate_config_of(request.config), list(request.update_mask.paths), request.expected_version,
            caller_of(context), request.reason,
        )
        return withdraw_pb2.SetGateResponse(config=gate_config_pb(config))

    async def ListGateAudit(
        self, request: withdraw_pb2.ListGateAuditRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ListGateAuditResponse:
        page = await self.admin.audit(request.page_size, request.page_token)
        return withdraw_pb2.ListGateAuditResponse(next_page_token=page.next_page_token, entries=[
            withdraw_pb2.GateAuditEntry(
                actor=e.actor, change_time=to_ts(e.at), new_config=gate_config_pb(e.new), reason=e.reason,
                old_config=gate_config_pb(e.old) if e.old else None,
            )
            for e in page.entries
        ])

    async def ProposeGateChange(
        self, request: withdraw_pb2.ProposeGateChangeRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ProposeGateChangeResponse:
        r = request.request
        change, _ = await self.changes.propose(gate_config_of(r.config), list(r.update_mask.paths),
                                               r.expected_version, r.reason, caller_of(context))
        return withdraw_pb2.ProposeGateChangeResponse(change=gate_change_pb(change))

    async def ApproveGateChange(
        self, request: withdraw_pb2.ApproveGateChangeRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ApproveGateChangeResponse:
        change, config = await self.changes.approve(request.change_id, caller_of(context))
        return withdraw_pb2.ApproveGateChangeResponse(change=gate_change_pb(change),
                                                      config=gate_config_pb(config))

    async def RejectGateChange(
        self, request: withdraw_pb2.RejectGateChangeRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.RejectGateChangeResponse:
        change = await self.changes.reject(request.change_id, caller_of(context), request.reason)
        return withdraw_pb2.RejectGateChangeResponse(change=gate_change_pb(change))

    async def ListGateChanges(
        self, request: withdraw_pb2.ListGateChangesRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ListGateChangesResponse:
        changes, token = await self.changes.list(request.page_size, request.page_token)
        return withdraw_pb2.ListGateChangesResponse(changes=[gate_change_pb(c) for c in changes],
                                                    next_page_token=token)

    async def ListAdminAudit(
        self, request: withdraw_pb2.ListAdminAuditRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.ListAdminAuditResponse:
        entries, token = await self.audit_log.list(request.page_size, request.page_token)
        return withdraw_pb2.ListAdminAuditResponse(entries=[audit_entry_pb(e) for e in entries],
                                                   next_page_token=token)

    async def RunCompensation(
        self, request: withdraw_pb2.RunCompensationRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.RunCompensationResponse:
        min_age = compensation_min_age(request.min_age_seconds, request.override_min_age,
                                       self.compensation.settings.compensation_min_age_s)
        ran, actions = await self.compensation.run(dry_run=request.dry_run, min_age_s=min_age)
        await self.audit_log.compensation_run(caller_of(context), request.dry_run, min_age, ran, actions)
        return withdraw_pb2.RunCompensationResponse(ran=ran, actions=[action_pb(a) for a in actions])

    async def GetStuckOrders(
        self, request: withdraw_pb2.GetStuckOrdersRequest, context: grpc.aio.ServicerContext
    ) -> withdraw_pb2.GetStuckOrdersResponse:
        counts = await self.compensation.stuck_counts()
        return withdraw_pb2.GetStuckOrdersResponse(bands=[
            withdraw_pb2.StuckBand(state=_STATE[c.state], older_than_seconds=c.older_than_s, count=c.count)
            for c in counts
        ])
