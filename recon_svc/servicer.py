"""gRPC <-> domain for ReconService."""

from __future__ import annotations

import grpc

from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from meshkit.admin_pb import audit_entry_pb
from meshkit.identity import caller_of
from meshkit.timeconv import to_ts
from recon_svc.daily import DailyRecon, Report
from recon_svc.domain import Discrepancy, NewDiscrepancy, Reason, Source, Status, one_filter
from recon_svc.service import ReconService
from recon_svc.sums import Sum

_STATUS = {
    Status.OPEN: recon_pb2.DISCREPANCY_STATUS_OPEN,
    Status.RESOLVED: recon_pb2.DISCREPANCY_STATUS_RESOLVED,
    Status.ACCEPTED: recon_pb2.DISCREPANCY_STATUS_ACCEPTED,
}
_STATUS_OF: dict[int, str] = {int(v): k.value for k, v in _STATUS.items()}


# One enum value per class and per source, named alike (a unit test holds them equal).
_REASON: dict[Reason, recon_pb2.DiscrepancyReason] = {
    r: getattr(recon_pb2, f"DISCREPANCY_REASON_{r.name}") for r in Reason}
_REASON_OF: dict[int, str] = {int(v): k.value for k, v in _REASON.items()}
_SOURCE: dict[Source, recon_pb2.DiscrepancySource] = {
    s: getattr(recon_pb2, f"DISCREPANCY_SOURCE_{s.name}") for s in Source}
_SOURCE_OF: dict[int, str] = {int(v): k.value for k, v in _SOURCE.items()}


def reason_pb(reason: str) -> recon_pb2.DiscrepancyReason:
    """The enum of a stored reason; UNSPECIFIED for one this version does not know."""
    known = Reason.__members__.get(reason.upper())
    return _REASON[known] if known is not None else recon_pb2.DISCREPANCY_REASON_UNSPECIFIED


def source_pb(source: str) -> recon_pb2.DiscrepancySource:
    """The enum of a stored source; UNSPECIFIED for one this version does not know."""
    known = Source.__members__.get(source.upper())
    return _SOURCE[known] if known is not None else recon_pb2.DISCREPANCY_SOURCE_UNSPECIFIED


def _name_of(value: int, names: dict[int, str]) -> str:
    # "" for UNSPECIFIED; an unknown number stays a number, which the rules refuse by name.
    return "" if value == 0 else names.get(value, str(value))


def status_of(value: int) -> str:
    """The status name of an enum value; "" for UNSPECIFIED, the number for an unknown one
    (which the rules then refuse by name)."""
    if value == recon_pb2.DISCREPANCY_STATUS_UNSPECIFIED:
        return ""
    return _STATUS_OF.get(value, str(value))


def discrepancy_pb(d: Discrepancy) -> recon_pb2.Discrepancy:
    return recon_pb2.Discrepancy(
        discrepancy_id=d.id, reason=d.reason, order_id=d.order_id, detail=d.detail,
        status=_STATUS[Status(d.status)], source=d.source, create_time=to_ts(d.created_at), note=d.note,
        uid=d.uid, subject=d.subject, update_time=to_ts(d.updated_at),
        reason_kind=reason_pb(d.reason), source_kind=source_pb(d.source),
    )


def finding_pb(d: NewDiscrepancy) -> recon_pb2.Discrepancy:
    return recon_pb2.Discrepancy(reason=d.reason, order_id=d.order_id, detail=d.detail, source=d.source,
                                 uid=d.uid, subject=d.subject, reason_kind=reason_pb(d.reason),
                                 source_kind=source_pb(d.source))


def report_pb(r: Report) -> recon_pb2.DailyReport:
    return recon_pb2.DailyReport(date=r.date, orders=r.orders, report_json=r.report_json,
                                 report_text=r.report_text, discrepancies=r.discrepancies,
                                 create_time=to_ts(r.created_at))


class ReconServicer(recon_pb2_grpc.ReconServiceServicer):
    def __init__(self, service: ReconService, daily: DailyRecon) -> None:
        self.service = service
        self.daily = daily

    async def ListDiscrepancies(
        self, request: recon_pb2.ListDiscrepanciesRequest, context: grpc.aio.ServicerContext
    ) -> recon_pb2.ListDiscrepanciesResponse:
        reason = one_filter("reason", request.reason, _name_of(request.reason_kind, _REASON_OF))
        source = one_filter("source", request.source, _name_of(request.source_kind, _SOURCE_OF))
        found, token = await self.service.list_discrepancies(
            status_of(request.status), reason, request.order_id, source, request.page_size,
            request.page_token)
        return recon_pb2.ListDiscrepanciesResponse(discrepancies=[discrepancy_pb(d) for d in found],
                                                   next_page_token=token)

    async def ResolveDiscrepancy(
        self, request: recon_pb2.ResolveDiscrepancyRequest, context: grpc.aio.ServicerContext
    ) -> recon_pb2.ResolveDiscrepancyResponse:
        done = await self.service.resolve(request.discrepancy_id, status_of(request.status),
                                          request.note, caller_of(context))
        return recon_pb2.ResolveDiscrepancyResponse(discrepancy=discrepancy_pb(done))

    async def ListAdminAudit(
        self, request: recon_pb2.ListAdminAuditRequest, context: grpc.aio.ServicerContext
    ) -> recon_pb2.ListAdminAuditResponse:
        page = await self.service.admin_audit(request.page_size, request.page_token)
        return recon_pb2.ListAdminAuditResponse(entries=[audit_entry_pb(e) for e in page.entries],
                                                next_page_token=page.next_page_token)

    async def CheckOrder(
        self, request: recon_pb2.CheckOrderRequest, context: grpc.aio.ServicerContext
    ) -> recon_pb2.CheckOrderResponse:
        found = await self.service.check_order(request.order_id)
        return recon_pb2.CheckOrderResponse(discrepancies=[finding_pb(d) for d in found])

    async def GetReconStatus(
        self, request: recon_pb2.GetReconStatusRequest, context: grpc.aio.ServicerContext
    ) -> recon_pb2.GetReconStatusResponse:
        s = await self.service.status()
        t = s.sums
        return recon_pb2.GetReconStatusResponse(
            positions=[recon_pb2.FeedPosition(feed=p.feed, cursor=p.cursor, update_time=to_ts(p.updated_at),
                                              applied=p.applied, head_time=to_ts(s.heads.get(p.feed)))
                       for p in s.positions],
            pending_checks=s.pending_checks, checked_orders=t[Sum.JUDGED].count,
            open_discrepancies=s.open_discrepancies, credits_fen=t[Sum.CREDIT].fen,
            debits_fen=t[Sum.DEBIT].fen, refunds_fen=t[Sum.REFUND].fen, balances_fen=t[Sum.BALANCE].fen,
            gateway_succeeded_fen=t[Sum.PAID].fen, orders_succeeded_fen=t[Sum.SUCCEEDED].fen,
        )

    async def RunDailyRecon(
        self, request: recon_pb2.RunDailyReconRequest, context: grpc.aio.ServicerContext
    ) -> recon_pb2.RunDailyReconResponse:
        return recon_pb2.RunDailyReconResponse(report=report_pb(await self.daily.run(request.date)))

    async def GetDailyReport(
        self, request: recon_pb2.GetDailyReportRequest, context: grpc.aio.ServicerContext
    ) -> recon_pb2.GetDailyReportResponse:
        return recon_pb2.GetDailyReportResponse(report=report_pb(await self.daily.get(request.date)))
