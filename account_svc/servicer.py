"""AccountService over gRPC: proto in, use case, proto out. Nothing else."""

from __future__ import annotations

import grpc

from account_svc.domain import CreditOutcome, Entry, Kind, RefundOutcome
from account_svc.service import Ledger
from mesh.account.v1 import account_pb2, account_pb2_grpc
from meshkit.errors import DomainError
from meshkit.timeconv import to_ts
from meshkit.user_auth import UserAuth
from meshkit.user_limits import retry_hint

_KIND = {
    Kind.CREDIT: account_pb2.ENTRY_KIND_CREDIT,
    Kind.DEBIT: account_pb2.ENTRY_KIND_DEBIT,
    Kind.REFUND: account_pb2.ENTRY_KIND_REFUND,
    Kind.VOID: account_pb2.ENTRY_KIND_VOID,
}
_CREDIT_OUTCOME = {
    CreditOutcome.CREDITED: account_pb2.CREDIT_OUTCOME_CREDITED,
    CreditOutcome.ALREADY_CREDITED: account_pb2.CREDIT_OUTCOME_ALREADY_CREDITED,
}
_REFUND_OUTCOME = {
    RefundOutcome.REFUNDED: account_pb2.REFUND_OUTCOME_REFUNDED,
    RefundOutcome.VOIDED: account_pb2.REFUND_OUTCOME_VOIDED,
}


def entry_pb(entry: Entry) -> account_pb2.Entry:
    return account_pb2.Entry(
        entry_id=entry.entry_id,
        uid=entry.uid or 0,
        kind=_KIND[entry.kind],
        amount_fen=entry.amount_fen,
        reward_id=entry.reward_id or "",
        order_id=entry.order_id or "",
        balance_after_fen=entry.balance_after_fen or 0,
        create_time=to_ts(entry.created_at),
        source=entry.source or "",
    )


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """GetBalance and ListEntries are user-facing (the balance, the bill): they act for the
    session token's uid (meshkit.user_auth). The rest is called by withdraw_svc and recon_svc."""

    def __init__(self, ledger: Ledger, users: UserAuth) -> None:
        self.ledger = ledger
        self.users = users

    async def ForceCredit(
        self, request: account_pb2.ForceCreditRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.ForceCreditResponse:
        with retry_hint(context):
            results, balance = await self.ledger.force_credit(request.uid, list(request.tokens))
        return account_pb2.ForceCreditResponse(
            results=[
                account_pb2.CreditResult(
                    reward_id=r.grant.reward_id, outcome=_CREDIT_OUTCOME[r.outcome],
                    amount_fen=r.grant.amount_fen,
                )
                for r in results
            ],
            balance_fen=balance,
        )

    async def Deduct(
        self, request: account_pb2.DeductRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.DeductResponse:
        entry, replayed = await self.ledger.deduct(request.order_id, request.uid, request.amount_fen)
        return account_pb2.DeductResponse(entry=entry_pb(entry), replayed=replayed)

    async def DeductBatch(
        self, request: account_pb2.DeductBatchRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.DeductBatchResponse:
        outcomes = await self.ledger.deduct_batch(
            [(d.order_id, d.uid, d.amount_fen) for d in request.deducts]
        )
        results = []
        for outcome in outcomes:
            if isinstance(outcome, DomainError):
                results.append(account_pb2.DeductResult(error=account_pb2.DeductError(
                    code=outcome.code.value, reason=outcome.reason, message=outcome.message)))
            else:
                entry, replayed = outcome
                results.append(account_pb2.DeductResult(
                    deducted=account_pb2.DeductResponse(entry=entry_pb(entry), replayed=replayed)))
        return account_pb2.DeductBatchResponse(results=results)

    async def Refund(
        self, request: account_pb2.RefundRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.RefundResponse:
        outcome, entry, replayed = await self.ledger.refund(request.order_id)
        return account_pb2.RefundResponse(
            outcome=_REFUND_OUTCOME[outcome], entry=entry_pb(entry), replayed=replayed
        )

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.GetBalanceResponse:
        uid = self.users.uid(context, "AccountService/GetBalance", request.uid)
        balance = await self.ledger.balance(uid)
        return account_pb2.GetBalanceResponse(uid=uid, balance_fen=balance)

    async def ListEntries(
        self, request: account_pb2.ListEntriesRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.ListEntriesResponse:
        uid = self.users.uid(context, "AccountService/ListEntries", request.uid)
        entries, next_token = await self.ledger.list_entries(uid, request.page_size, request.page_token)
        return account_pb2.ListEntriesResponse(
            entries=[entry_pb(e) for e in entries], next_page_token=next_token
        )

    async def GetOrderEntries(
        self, request: account_pb2.GetOrderEntriesRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.GetOrderEntriesResponse:
        entries = await self.ledger.order_entries(request.order_id)
        return account_pb2.GetOrderEntriesResponse(entries=[entry_pb(e) for e in entries])

    async def GetOrderEntriesBatch(
        self, request: account_pb2.GetOrderEntriesBatchRequest, context: grpc.aio.ServicerContext
    ) -> account_pb2.GetOrderEntriesBatchResponse:
        found = await self.ledger.orders_entries(list(request.order_ids))
        return account_pb2.GetOrderEntriesBatchResponse(orders=[
            account_pb2.OrderEntries(order_id=order_id, entries=[entry_pb(e) for e in entries])
            for order_id, entries in found.items()
        ])
