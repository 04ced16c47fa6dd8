"""Bad input never answers INTERNAL (SPEC 3.6). For every RPC of every service with a
string, id or token field: a value with NUL, an over-long value, a garbage page token and
an out-of-range one are each refused as INVALID_ARGUMENT naming the field, and nothing in
any service's tables changes (row counts of every table of the five schemas, ledger sums).

The five services run in-process with schemas and a Redis namespace of this module's own;
one funded user with a bound method makes the refusals happen where they would otherwise
reach PostgreSQL (an order insert, a payout lookup), not at an earlier "not bound"."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.account.v1 import account_pb2 as acc
from mesh.account.v1 import account_pb2_grpc as acc_grpc
from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from mesh.gateway.v1 import gateway_pb2 as gw
from mesh.gateway.v1 import gateway_pb2_grpc as gw_grpc
from mesh.payout.v1 import payout_pb2 as po
from mesh.payout.v1 import payout_pb2_grpc as po_grpc
from mesh.recon.v1 import recon_pb2 as rc
from mesh.recon.v1 import recon_pb2_grpc as rc_grpc
from mesh.withdraw.v1 import withdraw_pb2 as wd
from mesh.withdraw.v1 import withdraw_pb2_grpc as wd_grpc
from meshkit.server import RunningServer
from tests import harness
from tests.harness import user_metadata
from tests.integration.test_withdraw_support import WdMesh, _start, eventually, start_mesh

NUL = "wd-1\x00x"
LONG_ID = "o" * 300
LONG_TEXT = "t" * 5000
INT64_OVER = "9223372036854775808"  # INT64_MAX + 1: asyncpg cannot encode it as BIGINT


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Keyset page tokens ("<micros>:<id>", base64url) whose time is beyond datetime's range, or
# whose id carries a NUL: the shape is right, the values are not.
TOKEN_OUT_OF_RANGE = b64(b"99999999999999999999999:wd-1")
TOKEN_NUL_ID = b64(b"1700000000000000:wd-\x00")


@dataclass
class Mesh:
    m: WdMesh
    recon_srv: RunningServer
    db: asyncpg.Pool
    schemas: list[str]
    uid: int
    method_id: str
    channels: list[grpc.aio.Channel]

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = harness.channel(address)
        self.channels.append(channel)
        return channel

    def stub(self, service: str) -> Any:
        m = self.m
        assert m.payout_srv is not None
        account, withdraw, gateway, payout = (m.env["ACCOUNT_SVC_ADDR"], m.withdraw_addr,
                                              m.gateway_srv.address, m.payout_srv.address)
        return {
            "account": lambda: acc_grpc.AccountServiceStub(self.channel(m.env["ACCOUNT_SVC_ADDR"])),
            "withdraw": lambda: wd_grpc.WithdrawServiceStub(self.channel(m.withdraw_addr)),
            "coordination": lambda: wd_grpc.PayoutCoordinationServiceStub(self.channel(m.withdraw_addr)),
            "withdraw_admin": lambda: wd_grpc.WithdrawAdminServiceStub(self.channel(m.withdraw_addr)),
            "gateway": lambda: gw_grpc.GatewayServiceStub(self.channel(m.gateway_srv.address)),
            "gateway_admin": lambda: gw_grpc.GatewayAdminServiceStub(self.channel(m.gateway_srv.address)),
            "payout_admin": lambda: po_grpc.PayoutAdminServiceStub(self.channel(m.payout_srv.address)),
            "recon": lambda: rc_grpc.ReconServiceStub(self.channel(self.recon_srv.address)),
            "feed:account": lambda: feed_pb2_grpc.ChangeFeedServiceStub(self.channel(account)),
            "feed:withdraw": lambda: feed_pb2_grpc.ChangeFeedServiceStub(self.channel(withdraw)),
            "feed:gateway": lambda: feed_pb2_grpc.ChangeFeedServiceStub(self.channel(gateway)),
            "feed:payout": lambda: feed_pb2_grpc.ChangeFeedServiceStub(self.channel(payout)),
        }[service]()

    async def snapshot(self) -> dict[str, int]:
        """Row count of every table of the five schemas, and the ledger's sums."""
        tables = await self.db.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'", self.schemas)
        account = self.m.env["ACCOUNT_SVC_DB_SCHEMA"]
        parts = [f"SELECT '{t['table_schema']}.{t['table_name']}', count(*)::bigint"
                 f' FROM "{t["table_schema"]}"."{t["table_name"]}"' for t in tables]
        parts += [f"SELECT 'ledger balances', coalesce(sum(balance), 0)::bigint FROM \"{account}\".accounts",
                  f"SELECT 'ledger amounts', coalesce(sum(amount), 0)::bigint FROM \"{account}\".entries"]
        rows = await self.db.fetch(" UNION ALL ".join(parts))
        return {r[0]: r[1] for r in rows}


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[Mesh]:
    tag = uuid.uuid4().hex[:8]
    m = await start_mesh(mesh_env, payout=True, extra={
        "RECON_SVC_DB_SCHEMA": f"recon_bi{tag}", "RECON_DB_POOL_SIZE": "3", "PAYOUT_DB_POOL_SIZE": "2",
        "GATEWAY_DB_POOL_SIZE": "3",
    })
    recon_srv = await _start("recon_svc", {**m.env, "RECON_POLL_MS": "100", "RECON_AUDIT_S": "0.5"})
    db = await asyncpg.create_pool(m.env["DATABASE_URL"], min_size=1, max_size=2)
    assert db is not None
    schemas = [m.env[f"{svc}_DB_SCHEMA"] for svc in
               ("ACCOUNT_SVC", "WITHDRAW_SVC", "GATEWAY_MOCK", "PAYOUT_SVC", "RECON_SVC")]
    uid, method_id = await m.user(balance_fen=10_000)
    mesh = Mesh(m, recon_srv, db, schemas, uid, method_id, [])

    # Quiet before the first case: recon has projected the funding credit, and two
    # snapshots in a row agree (no background writer is still catching up).
    last: dict[str, int] = {}

    async def settled() -> bool:
        nonlocal last
        now = await mesh.snapshot()
        still, last = now == last, now
        return still and now[f"{schemas[4]}.r_entries"] >= 1

    await eventually(settled, timeout=10, interval=0.3, what="the mesh to settle")
    try:
        yield mesh
    finally:
        for channel in mesh.channels:
            await channel.close()
        await db.close()
        await recon_srv.stop(0.5)
        await m.stop()


# ---- the table --------------------------------------------------------------------------

Call = Callable[[Any, Mesh], Awaitable[Any]]
CASES: list[tuple[str, str, Call, str]] = []


def case(name: str, service: str, field: str, call: Call) -> None:
    CASES.append((name, service, call, field))


def confirm(**change: Any) -> Call:
    def call(s: Any, x: Mesh) -> Awaitable[Any]:
        fields: dict[str, Any] = {"uid": x.uid, "request_id": uuid.uuid4().hex, "amount_fen": 500,
                                  "method_id": x.method_id}
        return s.ConfirmWithdraw(wd.ConfirmWithdrawRequest(**{**fields, **change}), timeout=10,
                                 metadata=user_metadata(x.uid))
    return call


def payout(**change: Any) -> Call:
    def call(s: Any, x: Mesh) -> Awaitable[Any]:
        fields: dict[str, Any] = {"order_id": f"wd-{uuid.uuid4().hex}", "uid": x.uid, "channel": "bank",
                                  "method_id": x.method_id, "amount_fen": 500}
        return s.Payout(gw.PayoutRequest(**{**fields, **change}), timeout=10)
    return call


def bind(**change: Any) -> Call:
    def call(s: Any, x: Mesh) -> Awaitable[Any]:
        fields: dict[str, Any] = {"uid": x.uid, "channel": "bank", "account": "6222000011112222",
                                  "method_id": f"m-{uuid.uuid4().hex[:12]}"}
        return s.BindMethod(gw.BindMethodRequest(**{**fields, **change}), timeout=10)
    return call


def gate(reason: str = "test", **change: Any) -> Call:
    def call(s: Any, x: Mesh) -> Awaitable[Any]:
        fields: dict[str, Any] = {"timezone": "Asia/Shanghai", "release_modulus": 1, "release_k": 1}
        config = wd.GateConfig(**{**fields, **change})
        return s.SetGate(wd.SetGateRequest(config=config, reason=reason, update_mask=FieldMask(paths=["*"])),
                         timeout=10)
    return call


def simple(method: str, message: Any) -> Call:
    return lambda s, x: getattr(s, method)(message, timeout=10)


def as_user(method: str, message: Any) -> Call:
    """A user-facing RPC, signed in as the message's uid (or the test user's)."""
    return lambda s, x: getattr(s, method)(message, timeout=10,
                                           metadata=user_metadata(getattr(message, "uid", 0) or x.uid))


# account_svc
for label, value in (("nul", NUL), ("long", LONG_TEXT)):
    case(f"account ForceCredit token {label}", "account", "tokens[0]",
         simple("ForceCredit", acc.ForceCreditRequest(uid=7, tokens=[value])))
for label, value in (("nul", NUL), ("long", LONG_ID)):
    case(f"account Deduct order_id {label}", "account", "order_id",
         simple("Deduct", acc.DeductRequest(order_id=value, uid=7, amount_fen=1)))
    case(f"account Refund order_id {label}", "account", "order_id",
         simple("Refund", acc.RefundRequest(order_id=value)))
    case(f"account GetOrderEntries order_id {label}", "account", "order_id",
         simple("GetOrderEntries", acc.GetOrderEntriesRequest(order_id=value)))
for label, token in (("garbage", "zz"), ("unicode digit", "²"), ("out of range", INT64_OVER),
                     ("nul", "1\x00"), ("long", "9" * 300)):
    case(f"account ListEntries page_token {label}", "account", "page_token",
         as_user("ListEntries", acc.ListEntriesRequest(uid=7, page_token=token)))

# the change feed of every service that has one
for feed in ("account", "withdraw", "gateway", "payout"):
    for label, cursor in (("garbage", "x:y"), ("xid out of range", "99999999999999999999999:1"),
                          ("id out of range", f"1:{INT64_OVER}"), ("nul", "1\x00:1"),
                          ("unicode digits", "١:١"), ("long", "1:" + "9" * 300)):
        case(f"feed {feed} ReadChanges cursor {label}", f"feed:{feed}", "cursor",
             simple("ReadChanges", feed_pb2.ReadChangesRequest(cursor=cursor)))

# gateway_mock
for label, value in (("nul", NUL), ("long", LONG_ID)):
    case(f"gateway Payout order_id {label}", "gateway", "order_id", payout(order_id=value))
    case(f"gateway Payout channel {label}", "gateway", "channel", payout(channel=value))
    case(f"gateway Payout method_id {label}", "gateway", "method_id", payout(method_id=value))
    case(f"gateway QueryPayout order_id {label}", "gateway", "order_id",
         simple("QueryPayout", gw.QueryPayoutRequest(order_id=value)))
    case(f"gateway BindMethod channel {label}", "gateway", "channel", bind(channel=value))
    case(f"gateway BindMethod method_id {label}", "gateway", "method_id", bind(method_id=value))
    case(f"gateway SetChannelFaults channel {label}", "gateway_admin", "channel",
         simple("SetChannelFaults", gw.SetChannelFaultsRequest(faults=gw.ChannelFaults(channel=value))))
    case(f"gateway GetChannelFaults channel {label}", "gateway_admin", "channel",
         simple("GetChannelFaults", gw.GetChannelFaultsRequest(channel=value)))
for label, value in (("nul", "6222\x000000"), ("long", LONG_TEXT)):
    case(f"gateway BindMethod account {label}", "gateway", "account", bind(account=value))
for label, token in (("garbage", "%%%"), ("out of range", TOKEN_OUT_OF_RANGE), ("nul id", TOKEN_NUL_ID),
                     ("long", "A" * 5000)):
    case(f"gateway ListPayouts page_token {label}", "gateway", "page_token",
         simple("ListPayouts", gw.ListPayoutsRequest(page_token=token)))
    case(f"gateway ListMethods page_token {label}", "gateway", "page_token",
         as_user("ListMethods", gw.ListMethodsRequest(uid=7, page_token=token)))
case("gateway ListPayouts start_time out of range", "gateway", "start_time",
     simple("ListPayouts", gw.ListPayoutsRequest(start_time=Timestamp(seconds=2**40))))

# payout_svc admin
for label, value in (("nul", "bank\x00"), ("long", LONG_ID)):
    case(f"payout GetChannelStats channel {label}", "payout_admin", "channel",
         simple("GetChannelStats", po.GetChannelStatsRequest(channel=value)))
    case(f"payout SetChannelRate channel {label}", "payout_admin", "channel",
         simple("SetChannelRate", po.SetChannelRateRequest(channel=value, rate_per_second=5)))
    case(f"payout ListDeadLetters channel {label}", "payout_admin", "channel",
         simple("ListDeadLetters", po.ListDeadLettersRequest(channel=value)))
    case(f"payout ReplayDeadLetters channel {label}", "payout_admin", "channel",
         simple("ReplayDeadLetters", po.ReplayDeadLettersRequest(channel=value)))
for label, entry_id in (("nul", "1-\x00"), ("out of range", "99999999999999999999999-0"),
                        ("unicode digits", "١-١"), ("trailing newline", "1-1\n"), ("long", LONG_ID)):
    case(f"payout ReplayDeadLetters dead_letter_ids {label}", "payout_admin", "dead_letter_ids",
         simple("ReplayDeadLetters", po.ReplayDeadLettersRequest(channel="bank", dead_letter_ids=[entry_id])))
    case(f"payout ListDeadLetters page_token {label}", "payout_admin", "page_token",
         simple("ListDeadLetters", po.ListDeadLettersRequest(channel="bank", page_token=entry_id)))

# withdraw_svc: the app, payout coordination, operators
for label, value in (("nul", NUL), ("long", LONG_ID)):
    case(f"withdraw ConfirmWithdraw request_id {label}", "withdraw", "request_id", confirm(request_id=value))
    case(f"withdraw ConfirmWithdraw method_id {label}", "withdraw", "method_id", confirm(method_id=value))
    case(f"withdraw GetOrder order_id {label}", "withdraw", "order_id",
         as_user("GetOrder", wd.GetOrderRequest(order_id=value)))
    case(f"withdraw BeginPayout order_id {label}", "coordination", "order_id",
         simple("BeginPayout", wd.BeginPayoutRequest(order_id=value)))
    case(f"withdraw SettlePayout order_id {label}", "coordination", "order_id",
         simple("SettlePayout", wd.SettlePayoutRequest(order_id=value, result=wd.PAYOUT_RESULT_FAILED)))
    case(f"withdraw SetGate timezone {label}", "withdraw_admin", "timezone", gate(timezone=value))
    case(f"withdraw SetGate closed_start {label}", "withdraw_admin", "closed_start",
         gate(closed_start=value, closed_end="01:00"))
for label, value in (("nul", NUL), ("long", LONG_TEXT)):
    case(f"withdraw ConfirmWithdraw token {label}", "withdraw", "tokens[0]", confirm(tokens=[value]))
    case(f"withdraw SetGate bind_prompt {label}", "withdraw_admin", "bind_prompt", gate(bind_prompt=value))
    case(f"withdraw SetGate reason {label}", "withdraw_admin", "reason", gate(reason=value))
case("withdraw SettlePayout reason nul", "coordination", "reason",
     simple("SettlePayout", wd.SettlePayoutRequest(order_id="wd-none", result=wd.PAYOUT_RESULT_FAILED,
                                                   reason="closed\x00")))
for label, token in (("garbage", "%%%"), ("out of range", TOKEN_OUT_OF_RANGE), ("nul id", TOKEN_NUL_ID),
                     ("long", "A" * 5000)):
    case(f"withdraw ListOrders page_token {label}", "withdraw", "page_token",
         lambda s, x, token=token: s.ListOrders(wd.ListOrdersRequest(uid=x.uid, page_token=token),
                                                timeout=10, metadata=user_metadata(x.uid)))
case("withdraw GetGate uid negative", "withdraw_admin", "uid", simple("GetGate", wd.GetGateRequest(uid=-5)))
case("withdraw RunCompensation min_age_seconds out of range", "withdraw_admin", "min_age_seconds",
     simple("RunCompensation", wd.RunCompensationRequest(min_age_seconds=2**62, dry_run=True)))

# four-eyes changes and the admin audit (withdraw_svc, payout_svc, gateway_mock, recon_svc)
def propose_gate(reason: str = "test", **change: Any) -> Call:
    def call(s: Any, x: Mesh) -> Awaitable[Any]:
        fields: dict[str, Any] = {"timezone": "Asia/Shanghai", "release_modulus": 1, "release_k": 1}
        config = wd.GateConfig(**{**fields, **change})
        return s.ProposeGateChange(wd.ProposeGateChangeRequest(request=wd.SetGateRequest(
            config=config, reason=reason, update_mask=FieldMask(paths=["*"]))), timeout=10)
    return call


for label, value in (("nul", NUL), ("long", LONG_ID)):
    case(f"withdraw ProposeGateChange timezone {label}", "withdraw_admin", "timezone",
         propose_gate(timezone=value))
    case(f"withdraw ApproveGateChange change_id {label}", "withdraw_admin", "change_id",
         simple("ApproveGateChange", wd.ApproveGateChangeRequest(change_id=value)))
    case(f"withdraw RejectGateChange change_id {label}", "withdraw_admin", "change_id",
         simple("RejectGateChange", wd.RejectGateChangeRequest(change_id=value)))
    case(f"payout ProposeRateChange channel {label}", "payout_admin", "channel",
         simple("ProposeRateChange", po.ProposeRateChangeRequest(
             request=po.SetChannelRateRequest(channel=value, rate_per_second=5))))
    case(f"payout ApproveRateChange change_id {label}", "payout_admin", "change_id",
         simple("ApproveRateChange", po.ApproveRateChangeRequest(change_id=value)))
    case(f"payout RejectRateChange change_id {label}", "payout_admin", "change_id",
         simple("RejectRateChange", po.RejectRateChangeRequest(change_id=value)))
for label, value in (("nul", NUL), ("long", LONG_TEXT)):
    case(f"withdraw ProposeGateChange reason {label}", "withdraw_admin", "reason", propose_gate(reason=value))
    case(f"withdraw RejectGateChange reason {label}", "withdraw_admin", "reason",
         simple("RejectGateChange", wd.RejectGateChangeRequest(change_id="chg-none", reason=value)))
    case(f"payout ProposeRateChange reason {label}", "payout_admin", "reason",
         simple("ProposeRateChange", po.ProposeRateChangeRequest(
             request=po.SetChannelRateRequest(channel="bank", rate_per_second=5), reason=value)))
for label, token in (("garbage", "zz"), ("unicode digit", "²"), ("out of range", INT64_OVER),
                     ("nul", "1\x00"), ("long", "9" * 300)):
    case(f"withdraw ListGateChanges page_token {label}", "withdraw_admin", "page_token",
         simple("ListGateChanges", wd.ListGateChangesRequest(page_token=token)))
    case(f"withdraw ListGateAudit page_token {label}", "withdraw_admin", "page_token",
         simple("ListGateAudit", wd.ListGateAuditRequest(page_token=token)))
    case(f"recon ListDiscrepancies page_token {label}", "recon", "page_token",
         simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(page_token=token)))
    case(f"payout ListRateChanges page_token {label}", "payout_admin", "page_token",
         simple("ListRateChanges", po.ListRateChangesRequest(page_token=token)))
    case(f"withdraw ListAdminAudit page_token {label}", "withdraw_admin", "page_token",
         simple("ListAdminAudit", wd.ListAdminAuditRequest(page_token=token)))
    case(f"payout ListAdminAudit page_token {label}", "payout_admin", "page_token",
         simple("ListAdminAudit", po.ListAdminAuditRequest(page_token=token)))
    case(f"gateway ListAdminAudit page_token {label}", "gateway_admin", "page_token",
         simple("ListAdminAudit", gw.ListAdminAuditRequest(page_token=token)))
    case(f"recon ListAdminAudit page_token {label}", "recon", "page_token",
         simple("ListAdminAudit", rc.ListAdminAuditRequest(page_token=token)))

# recon_svc
for label, value in (("nul", NUL), ("long", LONG_ID)):
    case(f"recon ListDiscrepancies order_id {label}", "recon", "order_id",
         simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(order_id=value)))
    case(f"recon ListDiscrepancies source {label}", "recon", "source",
         simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(source=value)))
    case(f"recon ListDiscrepancies reason {label}", "recon", "reason",
         simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(reason=value)))
    case(f"recon CheckOrder order_id {label}", "recon", "order_id",
         simple("CheckOrder", rc.CheckOrderRequest(order_id=value)))
    case(f"recon RunDailyRecon date {label}", "recon", "date",
         simple("RunDailyRecon", rc.RunDailyReconRequest(date=value)))
    case(f"recon GetDailyReport date {label}", "recon", "date",
         simple("GetDailyReport", rc.GetDailyReportRequest(date=value)))
for label, value in (("nul", "fixed\x00"), ("long", LONG_TEXT)):
    case(f"recon ResolveDiscrepancy note {label}", "recon", "note",
         simple("ResolveDiscrepancy", rc.ResolveDiscrepancyRequest(
             discrepancy_id=1, status=rc.DISCREPANCY_STATUS_RESOLVED, note=value)))
case("recon ListDiscrepancies reason_kind against reason", "recon", "reason_kind",
     simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(
         reason="double_payout", reason_kind=rc.DISCREPANCY_REASON_MISSING_DEBIT)))
case("recon ListDiscrepancies source_kind against source", "recon", "source_kind",
     simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(
         source="daily", source_kind=rc.DISCREPANCY_SOURCE_REALTIME)))
case("recon ListDiscrepancies reason_kind unknown", "recon", "reason",
     simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(reason_kind=99)))  # type: ignore[arg-type]
case("recon ListDiscrepancies status unknown", "recon", "status",
     simple("ListDiscrepancies", rc.ListDiscrepanciesRequest(status=99)))  # type: ignore[arg-type]
case("recon ResolveDiscrepancy discrepancy_id negative", "recon", "discrepancy_id",
     simple("ResolveDiscrepancy", rc.ResolveDiscrepancyRequest(
         discrepancy_id=-1, status=rc.DISCREPANCY_STATUS_RESOLVED, note="x")))
case("recon RunDailyRecon date out of range", "recon", "date",
     simple("RunDailyRecon", rc.RunDailyReconRequest(date="9999-12-31")))


@pytest.mark.parametrize(("name", "service", "call", "field"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_invalid_argument_naming_the_field_and_changes_nothing(
    mesh: Mesh, name: str, service: str, call: Call, field: str
) -> None:
    before = await mesh.snapshot()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(mesh.stub(service), mesh)
    details = info.value.details() or ""
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {info.value.code()} {details!r}"
    assert field in details, f"{name}: {details!r} does not name {field}"
    assert len(details) <= 300, f"{name}: message of {len(details)} characters"
    assert await mesh.snapshot() == before


async def test_a_batch_item_with_nul_is_refused_alone(mesh: Mesh) -> None:
    before = await mesh.snapshot()
    reply = await mesh.stub("account").DeductBatch(acc.DeductBatchRequest(deducts=[
        acc.DeductRequest(order_id=NUL, uid=mesh.uid, amount_fen=1),
        acc.DeductRequest(order_id=LONG_ID, uid=mesh.uid, amount_fen=1),
    ]), timeout=10)
    errors = [r.error for r in reply.results]
    assert [e.code for e in errors] == ["INVALID_ARGUMENT"] * 2
    assert all(e.message.startswith("order_id") for e in errors), errors
    assert await mesh.snapshot() == before


async def test_a_request_that_does_not_parse_is_invalid_argument(mesh: Mesh) -> None:
    # A string field with bad UTF-8 (generated clients cannot send it; raw bytes can).
    call = mesh.channel(mesh.m.withdraw_addr).unary_unary(
        "/mesh.withdraw.v1.WithdrawService/GetOrder",
        request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"\x0a\x02\xff\xfe", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("request: not a valid message")


async def test_valid_page_tokens_still_page(mesh: Mesh) -> None:
    # The keyset token format is shared by withdraw_svc and gateway_mock now: pages still chain.
    for _ in range(3):
        await confirm()(mesh.stub("withdraw"), mesh)
    withdraw = mesh.stub("withdraw")
    first = await withdraw.ListOrders(wd.ListOrdersRequest(uid=mesh.uid, page_size=2), timeout=10,
                                      metadata=user_metadata(mesh.uid))
    assert len(first.orders) == 2 and first.next_page_token
    rest = await withdraw.ListOrders(
        wd.ListOrdersRequest(uid=mesh.uid, page_size=2, page_token=first.next_page_token), timeout=10,
        metadata=user_metadata(mesh.uid))
    seen = [o.order_id for o in [*first.orders, *rest.orders]]
    assert len(rest.orders) == 1 and len(set(seen)) == 3
