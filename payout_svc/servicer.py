"""gRPC <-> domain for PayoutAdminService."""

from __future__ import annotations

import grpc

from mesh.payout.v1 import payout_pb2, payout_pb2_grpc
from meshkit.admin_pb import audit_entry_pb, review_pb
from meshkit.admin_store import PoolAudit
from meshkit.four_eyes import Change
from meshkit.identity import caller_of
from meshkit.timeconv import to_ts
from payout_svc.domain import ChannelStats, DeadLetter, Job
from payout_svc.rate_changes import RateChanges, rate_request
from payout_svc.service import PayoutAdmin


def stats_pb(s: ChannelStats) -> payout_pb2.ChannelStats:
    return payout_pb2.ChannelStats(
        channel=s.channel, backlog=s.backlog, pending=s.pending, consumers=s.consumers,
        rate_limit_per_second=s.rate_limit_per_second, current_rate_per_second=s.current_rate_per_second,
        dead_letters=s.dead_letters, unlimited=s.unlimited, paused=s.paused,
    )


def job_pb(j: Job) -> payout_pb2.PayoutJob:
    return payout_pb2.PayoutJob(order_id=j.order_id, uid=j.uid, channel=j.channel, method_id=j.method_id,
                                amount_fen=j.amount_fen, attempt=j.attempt,
                                enqueue_time=to_ts(j.enqueue_time), last_error=j.last_error)


def dead_letter_pb(d: DeadLetter) -> payout_pb2.DeadLetter:
    return payout_pb2.DeadLetter(dead_letter_id=d.dead_letter_id, job=job_pb(d.job), reason=d.reason,
                                 attempts=d.attempts, dead_time=to_ts(d.dead_time))


def rate_change_pb(change: Change) -> payout_pb2.RateChange:
    channel, per_second, unlimited = rate_request(change)
    return payout_pb2.RateChange(
        review=review_pb(change),
        request=payout_pb2.SetChannelRateRequest(channel=channel, rate_per_second=per_second,
                                                 unlimited=unlimited),
    )


class PayoutAdminServicer(payout_pb2_grpc.PayoutAdminServiceServicer):
    def __init__(self, admin: PayoutAdmin, changes: RateChanges, audit: PoolAudit) -> None:
        self.admin = admin
        self.changes = changes
        self.audit = audit

    async def GetChannelStats(
        self, request: payout_pb2.GetChannelStatsRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.GetChannelStatsResponse:
        stats = await self.admin.stats(request.channel)
        return payout_pb2.GetChannelStatsResponse(channels=[stats_pb(s) for s in stats])

    async def SetChannelRate(
        self, request: payout_pb2.SetChannelRateRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.SetChannelRateResponse:
        stats = await self.admin.set_rate(request.channel, request.rate_per_second, request.unlimited,
                                          caller_of(context))
        return payout_pb2.SetChannelRateResponse(stats=stats_pb(stats))

    async def ProposeRateChange(
        self, request: payout_pb2.ProposeRateChangeRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.ProposeRateChangeResponse:
        r = request.request
        change = await self.changes.propose(r.channel, r.rate_per_second, r.unlimited, request.reason,
                                            caller_of(context))
        return payout_pb2.ProposeRateChangeResponse(change=rate_change_pb(change))

    async def ApproveRateChange(
        self, request: payout_pb2.ApproveRateChangeRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.ApproveRateChangeResponse:
        change, stats = await self.changes.approve(request.change_id, caller_of(context))
        return payout_pb2.ApproveRateChangeResponse(change=rate_change_pb(change), stats=stats_pb(stats))

    async def RejectRateChange(
        self, request: payout_pb2.RejectRateChangeRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.RejectRateChangeResponse:
        change = await self.changes.reject(request.change_id, caller_of(context), request.reason)
        return payout_pb2.RejectRateChangeResponse(change=rate_change_pb(change))

    async def ListRateChanges(
        self, request: payout_pb2.ListRateChangesRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.ListRateChangesResponse:
        changes, token = await self.changes.list(request.page_size, request.page_token)
        return payout_pb2.ListRateChangesResponse(changes=[rate_change_pb(c) for c in changes],
                                                  next_page_token=token)

    async def ListAdminAudit(
        self, request: payout_pb2.ListAdminAuditRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.ListAdminAuditResponse:
        entries, token = await self.audit.list(request.page_size, request.page_token)
        return payout_pb2.ListAdminAuditResponse(entries=[audit_entry_pb(e) for e in entries],
                                                 next_page_token=token)

    async def ListDeadLetters(
        self, request: payout_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.ListDeadLettersResponse:
        letters, token = await self.admin.list_dead_letters(request.channel, request.page_size,
                                                            request.page_token)
        return payout_pb2.ListDeadLettersResponse(dead_letters=[dead_letter_pb(d) for d in letters],
                                                  next_page_token=token)

    async def ReplayDeadLetters(
        self, request: payout_pb2.ReplayDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> payout_pb2.ReplayDeadLettersResponse:
        replayed = await self.admin.replay(request.channel, list(request.dead_letter_ids), caller_of(context))
        return payout_pb2.ReplayDeadLettersResponse(replayed=replayed)
