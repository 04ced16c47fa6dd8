"""Hostile input, fuzzed (issue 13 item 8): every RPC of every service gets generated and
mutated requests (tests/fuzz/messages.py) against the real services, in-process on free
ports, with this module's own schemas and Redis namespace on the real PostgreSQL and Redis.

For every call: the status is never INTERNAL or UNKNOWN. For every call that is refused
(any status but OK, or a batch whose every item is refused), and for every call of an RPC
declared NO_SIDE_EFFECTS, the ledger
(accounts and entries: counts and sums), the orders (count, states), the outbox, the
gateway's payouts and methods, and the gate, rate and fault configuration are unchanged.

The mesh is kept still so that a change can only come from the call under test: payout_svc
serves a channel nothing is queued on (so no worker pays behind the test's back), the
compensation job and the resolution of unconfirmed deducts are off, and after a call that
was accepted and may write, the test waits until the snapshot stops moving (the refund
relay, woken by an accepted SettlePayout(FAILED), finishes) and puts back what a config
call changed (gate, gateway faults), so later cases meet the same mesh.

One test per RPC, made from the descriptors: a new RPC is fuzzed as soon as it exists, and
test_every_rpc_has_a_seed_and_a_server fails until it has a known-good request here."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from hypothesis import example, given

from mesh.account.v1 import account_pb2 as acc
from mesh.feed.v1 import feed_pb2
from mesh.gateway.v1 import gateway_pb2 as gw
from mesh.gateway.v1 import gateway_pb2_grpc as gw_grpc
from mesh.payout.v1 import payout_pb2 as po
from mesh.recon.v1 import recon_pb2 as rc
from mesh.withdraw.v1 import settings_pb2
from mesh.withdraw.v1 import withdraw_pb2 as wd
from mesh.withdraw.v1 import withdraw_pb2_grpc as wd_grpc
from meshkit.server import RunningServer
from tests.fuzz import stats
from tests.fuzz.messages import CONTEXT, Case, Rpc, all_rpcs, cases
from tests.harness import channel, user_metadata
from tests.integration.ledger_invariants import reward_token
from tests.integration.withdraw_support import WdMesh, _start, start_mesh
from tests.waiting import eventually

RPCS = all_rpcs()
FAULT_CHANNEL = "bank"
# The only channel payout_svc serves here; nothing is ever queued on it.
IDLE_PAYOUT_CHANNEL = "fuzzidle"
CALL_TIMEOUT_S = 15.0

# Which server answers each service (the change feed: every service that has one).
SERVERS: dict[str, tuple[str, ...]] = {
    "mesh.account.v1.AccountService": ("account",),
    "mesh.feed.v1.ChangeFeedService": ("account", "withdraw", "gateway", "payout"),
    "mesh.gateway.v1.GatewayService": ("gateway",),
    "mesh.gateway.v1.GatewayAdminService": ("gateway",),
    "mesh.payout.v1.PayoutAdminService": ("payout",),
    "mesh.recon.v1.ReconService": ("recon",),
    "mesh.withdraw.v1.WithdrawService": ("withdraw",),
    "mesh.withdraw.v1.PayoutCoordinationService": ("withdraw",),
    "mesh.withdraw.v1.WithdrawAdminService": ("withdraw",),
    "mesh.withdraw.v1.WithdrawSettingsService": ("withdraw",),
}


# ---- the mesh's known values, and a known-good request of every RPC ---------------------


@dataclass
class Known:
    uid: int = 1
    method_id: str = "m-none"
    other_uid: int = 2
    pending: list[str] = field(default_factory=lambda: ["wd-none"])
    paying: list[str] = field(default_factory=lambda: ["wd-none"])
    today: str = "2026-12-01"


KNOWN = Known()


def _pending(n: int) -> str:
    return KNOWN.pending[n % len(KNOWN.pending)]


def _paying(n: int) -> str:
    return KNOWN.paying[n % len(KNOWN.paying)]


def _gate() -> wd.GateConfig:
    return wd.GateConfig(timezone="Asia/Shanghai", release_modulus=1, release_k=1)


# Each seed makes a request the service would accept from a fresh mesh; n varies its ids.
SEEDS: dict[str, Callable[[int], Message]] = {
    "mesh.account.v1.AccountService/ForceCredit": lambda n: acc.ForceCreditRequest(
        uid=KNOWN.uid, tokens=[reward_token(KNOWN.uid, 100, reward_id=f"rw-fz-{n}")]),
    "mesh.account.v1.AccountService/Deduct": lambda n: acc.DeductRequest(
        order_id=f"fz-d-{n}", uid=KNOWN.uid, amount_fen=100),
    "mesh.account.v1.AccountService/DeductBatch": lambda n: acc.DeductBatchRequest(deducts=[
        acc.DeductRequest(order_id=f"fz-db-{n}-{i}", uid=KNOWN.uid, amount_fen=100) for i in range(2)]),
    "mesh.account.v1.AccountService/Refund": lambda n: acc.RefundRequest(order_id=f"fz-d-{n}"),
    "mesh.account.v1.AccountService/GetBalance": lambda n: acc.GetBalanceRequest(uid=KNOWN.uid),
    "mesh.account.v1.AccountService/ListEntries": lambda n: acc.ListEntriesRequest(
        uid=KNOWN.uid, page_size=5),
    "mesh.account.v1.AccountService/GetOrderEntries": lambda n: acc.GetOrderEntriesRequest(
        order_id=_pending(n)),
    "mesh.account.v1.AccountService/GetOrderEntriesBatch": lambda n: acc.GetOrderEntriesBatchRequest(
        order_ids=[_pending(n), _paying(n)]),
    "mesh.feed.v1.ChangeFeedService/ReadChanges": lambda n: feed_pb2.ReadChangesRequest(limit=10),
    "mesh.gateway.v1.GatewayService/Payout": lambda n: gw.PayoutRequest(
        order_id=f"fz-p-{n}", uid=KNOWN.uid, channel="bank", method_id=KNOWN.method_id, amount_fen=100),
    "mesh.gateway.v1.GatewayService/PayoutBatch": lambda n: gw.PayoutBatchRequest(payouts=[
        gw.PayoutRequest(order_id=f"fz-pb-{n}-{i}", uid=KNOWN.uid, channel="bank",
                         method_id=KNOWN.method_id, amount_fen=100) for i in range(2)]),
    "mesh.gateway.v1.GatewayService/QueryPayout": lambda n: gw.QueryPayoutRequest(order_id=f"fz-p-{n}"),
    "mesh.gateway.v1.GatewayService/QueryPayouts": lambda n: gw.QueryPayoutsRequest(
        order_ids=[f"fz-p-{n}", _paying(n)]),
    "mesh.gateway.v1.GatewayService/ListPayouts": lambda n: gw.ListPayoutsRequest(page_size=5),
    "mesh.gateway.v1.GatewayService/ListMethods": lambda n: gw.ListMethodsRequest(uid=KNOWN.uid),
    "mesh.gateway.v1.GatewayService/BindMethod": lambda n: gw.BindMethodRequest(
        uid=KNOWN.other_uid, channel="alipay", account=f"acct{n:08d}", method_id=f"m-fz-{n}"),
    "mesh.gateway.v1.GatewayAdminService/SetChannelFaults": lambda n: gw.SetChannelFaultsRequest(
        faults=gw.ChannelFaults(channel=FAULT_CHANNEL)),
    "mesh.gateway.v1.GatewayAdminService/GetChannelFaults": lambda n: gw.GetChannelFaultsRequest(
        channel=FAULT_CHANNEL),
    "mesh.payout.v1.PayoutAdminService/GetChannelStats": lambda n: po.GetChannelStatsRequest(
        channel=IDLE_PAYOUT_CHANNEL),
    "mesh.payout.v1.PayoutAdminService/SetChannelRate": lambda n: po.SetChannelRateRequest(
        channel=IDLE_PAYOUT_CHANNEL, rate_per_second=5),
    "mesh.payout.v1.PayoutAdminService/ListDeadLetters": lambda n: po.ListDeadLettersRequest(
        channel=IDLE_PAYOUT_CHANNEL, page_size=5),
    "mesh.payout.v1.PayoutAdminService/ReplayDeadLetters": lambda n: po.ReplayDeadLettersRequest(
        channel=IDLE_PAYOUT_CHANNEL, dead_letter_ids=["1-0"]),
    "mesh.recon.v1.ReconService/ListDiscrepancies": lambda n: rc.ListDiscrepanciesRequest(page_size=5),
    "mesh.recon.v1.ReconService/ResolveDiscrepancy": lambda n: rc.ResolveDiscrepancyRequest(
        discrepancy_id=1 + n % 3, status=rc.DISCREPANCY_STATUS_RESOLVED, note="fuzz"),
    "mesh.recon.v1.ReconService/CheckOrder": lambda n: rc.CheckOrderRequest(order_id=_pending(n)),
    "mesh.recon.v1.ReconService/GetReconStatus": lambda n: rc.GetReconStatusRequest(),
    "mesh.recon.v1.ReconService/RunDailyRecon": lambda n: rc.RunDailyReconRequest(date=KNOWN.today),
    "mesh.recon.v1.ReconService/GetDailyReport": lambda n: rc.GetDailyReportRequest(date=KNOWN.today),
    "mesh.withdraw.v1.WithdrawService/GetWithdrawPage": lambda n: wd.GetWithdrawPageRequest(uid=KNOWN.uid),
    "mesh.withdraw.v1.WithdrawService/ConfirmWithdraw": lambda n: wd.ConfirmWithdrawRequest(
        uid=KNOWN.uid, request_id=f"fz-r-{n}", amount_fen=100, method_id=KNOWN.method_id),
    "mesh.withdraw.v1.WithdrawService/GetOrder": lambda n: wd.GetOrderRequest(order_id=_pending(n)),
    "mesh.withdraw.v1.WithdrawService/ListOrders": lambda n: wd.ListOrdersRequest(uid=KNOWN.uid, page_size=5),
    "mesh.withdraw.v1.PayoutCoordinationService/BeginPayout": lambda n: wd.BeginPayoutRequest(
        order_id=_pending(n)),
    "mesh.withdraw.v1.PayoutCoordinationService/SettlePayout": lambda n: wd.SettlePayoutRequest(
        order_id=_paying(n), result=wd.PAYOUT_RESULT_FAILED, reason="fuzz"),
    "mesh.withdraw.v1.PayoutCoordinationService/BeginPayoutBatch": lambda n: wd.BeginPayoutBatchRequest(
        order_ids=[_pending(n), _pending(n + 1)]),
    "mesh.withdraw.v1.PayoutCoordinationService/SettlePayoutBatch": lambda n: wd.SettlePayoutBatchRequest(
        settles=[wd.SettlePayoutRequest(order_id=_paying(n), result=wd.PAYOUT_RESULT_SUCCEEDED)]),
    "mesh.withdraw.v1.WithdrawAdminService/GetGate": lambda n: wd.GetGateRequest(uid=KNOWN.uid),
    "mesh.withdraw.v1.WithdrawAdminService/SetGate": lambda n: wd.SetGateRequest(
        config=_gate(), reason="fuzz", update_mask=FieldMask(paths=["*"])),
    "mesh.withdraw.v1.WithdrawAdminService/ListGateAudit": lambda n: wd.ListGateAuditRequest(page_size=5),
    "mesh.withdraw.v1.WithdrawAdminService/RunCompensation": lambda n: wd.RunCompensationRequest(
        dry_run=True, min_age_seconds=3600),
    "mesh.withdraw.v1.WithdrawAdminService/GetStuckOrders": lambda n: wd.GetStuckOrdersRequest(),
    "mesh.withdraw.v1.WithdrawSettingsService/GetSettings": lambda n: settings_pb2.GetSettingsRequest(),
    "mesh.withdraw.v1.PayoutCoordinationService/GetOrderStates": lambda n: wd.GetOrderStatesRequest(
        order_ids=[_pending(n), _paying(n)]),
    # Four-eyes admin: a proposal, decisions on change ids that may or may not exist, lists.
    "mesh.withdraw.v1.WithdrawAdminService/ProposeGateChange": lambda n: wd.ProposeGateChangeRequest(
        request=wd.SetGateRequest(config=_gate(), reason="fuzz", update_mask=FieldMask(paths=["*"]))),
    "mesh.withdraw.v1.WithdrawAdminService/ApproveGateChange": lambda n: wd.ApproveGateChangeRequest(
        change_id=f"gc-{n}"),
    "mesh.withdraw.v1.WithdrawAdminService/RejectGateChange": lambda n: wd.RejectGateChangeRequest(
        change_id=f"gc-{n}", reason="fuzz"),
    "mesh.withdraw.v1.WithdrawAdminService/ListGateChanges": lambda n: wd.ListGateChangesRequest(page_size=5),
    "mesh.withdraw.v1.WithdrawAdminService/ListAdminAudit": lambda n: wd.ListAdminAuditRequest(page_size=5),
    "mesh.payout.v1.PayoutAdminService/ProposeRateChange": lambda n: po.ProposeRateChangeRequest(
        request=po.SetChannelRateRequest(channel=IDLE_PAYOUT_CHANNEL, rate_per_second=5), reason="fuzz"),
    "mesh.payout.v1.PayoutAdminService/ApproveRateChange": lambda n: po.ApproveRateChangeRequest(
        change_id=f"rc-{n}"),
    "mesh.payout.v1.PayoutAdminService/RejectRateChange": lambda n: po.RejectRateChangeRequest(
        change_id=f"rc-{n}", reason="fuzz"),
    "mesh.payout.v1.PayoutAdminService/ListRateChanges": lambda n: po.ListRateChangesRequest(page_size=5),
    "mesh.payout.v1.PayoutAdminService/ListAdminAudit": lambda n: po.ListAdminAuditRequest(page_size=5),
    "mesh.gateway.v1.GatewayAdminService/ListAdminAudit": lambda n: gw.ListAdminAuditRequest(page_size=5),
    "mesh.recon.v1.ReconService/ListAdminAudit": lambda n: rc.ListAdminAuditRequest(page_size=5),
}


# ---- the mesh ----------------------------------------------------------------------------


@dataclass
class Mesh:
    m: WdMesh
    recon_srv: RunningServer
    db: asyncpg.Pool
    schema: dict[str, str]
    baseline: dict[str, int] = field(default_factory=dict)
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    turn: int = 0
    # Stubs that put back what an accepted config call changed (made once, on first use).
    # The fuzz user's signed-in metadata, sent with every call (user-facing RPCs need it).
    session: tuple[tuple[str, str], ...] = ()
    admin: wd_grpc.WithdrawAdminServiceStub | None = None
    faults: gw_grpc.GatewayAdminServiceStub | None = None

    def address(self, server: str) -> str:
        m = self.m
        assert m.payout_srv is not None
        return {"account": m.env["ACCOUNT_SVC_ADDR"], "withdraw": m.withdraw_addr,
                "gateway": m.gateway_srv.address, "payout": m.payout_srv.address,
                "recon": self.recon_srv.address}[server]

    def caller(self, rpc: Rpc) -> Callable[..., Awaitable[Any]]:
        """The raw call of `rpc` (bytes in, so trailers and undecodable requests go out as
        they are); the change feed rotates over the services that serve it."""
        servers = SERVERS[rpc.service.full_name]
        server = servers[self.turn % len(servers)]
        self.turn += 1
        if server not in self.channels:
            # As tools dial: mutual TLS with this run's certificates, each method under an
            # identity the policy allows (so hostile requests get past the allow-list and
            # reach validation), admin services on their admin port.
            self.channels[server] = channel(self.address(server))
        return self.channels[server].unary_unary(
            rpc.path, request_serializer=lambda raw: raw,
            response_deserializer=rpc.response_class().FromString)

    async def snapshot(self) -> dict[str, int]:
        """Counts and sums of what a refused call must not touch, in one round trip."""
        a, w, g, p = (self.schema[k] for k in ("account", "withdraw", "gateway", "payout"))
        row = await self.db.fetchrow(f"""
            SELECT
              (SELECT count(*) FROM "{a}".accounts) AS accounts,
              (SELECT coalesce(sum(balance), 0) FROM "{a}".accounts) AS balances,
              (SELECT count(*) FROM "{a}".entries) AS entries,
              (SELECT coalesce(sum(amount), 0) FROM "{a}".entries) AS entry_amounts,
              (SELECT count(*) FROM "{w}".orders) AS orders,
              (SELECT coalesce(sum(hashtext(order_id || ':' || state)), 0) FROM "{w}".orders) AS order_states,
              (SELECT count(*) FROM "{w}".outbox) AS outbox,
              (SELECT coalesce(sum(hashtext(c::text)), 0) FROM "{w}".gate_config c) AS gate,
              (SELECT count(*) FROM "{g}".payouts) AS payouts,
              (SELECT coalesce(sum(hashtext(order_id || ':' || uid || ':' || method_id || ':' || amount_fen)),
                               0) FROM "{g}".payouts) AS payout_records,
              (SELECT count(*) FROM "{g}".methods) AS methods,
              (SELECT coalesce(sum(hashtext(c::text)), 0) FROM "{g}".channel_faults c) AS faults,
              (SELECT coalesce(sum(hashtext(c::text)), 0) FROM "{p}".channel_config c) AS rates
        """)
        assert row is not None
        return {k: int(v) for k, v in row.items()}

    async def quiet(self) -> dict[str, int]:
        """The snapshot once two in a row agree: what an accepted call set going is done."""
        last: dict[str, int] = {}

        async def still() -> dict[str, int] | None:
            nonlocal last
            now = await self.snapshot()
            same, last = now == last, now
            return now if same else None

        return await eventually(still, timeout=15, interval=0.02, what="the mesh to be still")


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[Mesh]:
    tag = uuid.uuid4().hex[:8]
    m = await start_mesh(mesh_env, payout=True, extra={
        "RECON_SVC_DB_SCHEMA": f"recon_fz{tag}", "RECON_DB_POOL_SIZE": "3", "PAYOUT_DB_POOL_SIZE": "2",
        "GATEWAY_DB_POOL_SIZE": "3", "PAYOUT_CHANNELS": IDLE_PAYOUT_CHANNEL,
        "WITHDRAW_DEDUCT_RESOLVE_AFTER_S": "0",
    })
    recon_srv = await _start("recon_svc", {**m.env, "RECON_POLL_MS": "200", "RECON_AUDIT_S": "5"})
    db = await asyncpg.create_pool(m.env["DATABASE_URL"], min_size=1, max_size=2)
    assert db is not None
    schema = {"account": m.env["ACCOUNT_SVC_DB_SCHEMA"], "withdraw": m.env["WITHDRAW_SVC_DB_SCHEMA"],
              "gateway": m.env["GATEWAY_MOCK_DB_SCHEMA"], "payout": m.env["PAYOUT_SVC_DB_SCHEMA"]}
    mesh = Mesh(m, recon_srv, db, schema)

    # A funded user with a bound method and orders in both states a payout worker meets.
    uid, method_id = await m.user(balance_fen=50_000_000)
    other_uid, _ = await m.user(channel="alipay")
    orders = [(await m.confirm(uid, method_id, 1000)).order.order_id for _ in range(24)]
    coordination = m.coordination()
    for order_id in orders[12:]:
        await coordination.BeginPayout(wd.BeginPayoutRequest(order_id=order_id), timeout=10)
    KNOWN.uid, KNOWN.method_id, KNOWN.other_uid = uid, method_id, other_uid
    mesh.session = user_metadata(uid)
    KNOWN.pending, KNOWN.paying = orders[:12], orders[12:]
    KNOWN.today = datetime.date.today().isoformat()
    CONTEXT.strings = [method_id, *orders, "bank", "alipay", "balance", IDLE_PAYOUT_CHANNEL, KNOWN.today,
                       "Asia/Shanghai", "*", "release_k", "closed_start", "19:00", "01:00",
                       reward_token(uid, 100), reward_token(uid, 100, key_id="k2")]
    CONTEXT.ints = [uid, other_uid, 1, 100, 1000, 100_000_000, 1, 2, 3]
    mesh.baseline = await mesh.quiet()
    try:
        yield mesh
    finally:
        for channel in mesh.channels.values():
            await channel.close()
        await db.close()
        await recon_srv.stop(0.5)
        await m.stop()


# ---- one case ----------------------------------------------------------------------------


async def _restore(mesh: Mesh, rpc: Rpc, request: Message) -> None:
    """Put back what an accepted config change set, so the next cases meet the same mesh."""
    if rpc.name in ("mesh.withdraw.v1.WithdrawAdminService/SetGate",
                    "mesh.withdraw.v1.WithdrawAdminService/ApproveGateChange"):
        mesh.admin = mesh.admin or mesh.m.admin()
        await mesh.admin.SetGate(wd.SetGateRequest(config=_gate(), reason="fuzz: restore",
                                                   update_mask=FieldMask(paths=["*"])), timeout=10)
    elif rpc.name == "mesh.gateway.v1.GatewayAdminService/SetChannelFaults":
        assert isinstance(request, gw.SetChannelFaultsRequest)
        mesh.faults = mesh.faults or mesh.m.gateway_admin()
        await mesh.faults.SetChannelFaults(gw.SetChannelFaultsRequest(
            faults=gw.ChannelFaults(channel=request.faults.channel)), timeout=10)


def every_item_refused(reply: Message) -> bool:
    """A batch reply (repeated results, each with an `error` alternative) whose every item,
    one at least, is an error: the call was accepted, its items all refused."""
    for fd in reply.DESCRIPTOR.fields:
        item_type = fd.message_type
        if not fd.is_repeated or item_type is None or "error" not in item_type.fields_by_name:
            continue
        items = getattr(reply, fd.name)
        return len(items) > 0 and all(item.HasField("error") for item in items)
    return False


async def check(mesh: Mesh, rpc: Rpc, case: Case) -> None:
    call = mesh.caller(rpc)
    before = mesh.baseline
    refused_items = False
    try:
        reply = await call(case.payload(), timeout=CALL_TIMEOUT_S, metadata=(*mesh.session, *case.metadata))
        code, details = grpc.StatusCode.OK, ""
        refused_items = every_item_refused(reply)
    except grpc.aio.AioRpcError as err:
        code, details = err.code(), err.details() or ""
    stats.record(rpc.name, code.name)
    after = await mesh.snapshot()
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    try:
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), \
            f"{rpc.name} answered {code.name} {details[:200]!r} to {case!r}"
        if code != grpc.StatusCode.OK:
            assert not changed, \
                f"{rpc.name} refused {case!r} ({code.name} {details[:200]!r}) yet changed {changed}"
        elif refused_items:
            assert not changed, f"{rpc.name} refused every item of {case!r}, yet changed {changed}"
        elif rpc.read_only:
            assert not changed, f"{rpc.name} has no side effects, yet {case!r} changed {changed}"
        else:
            await _restore(mesh, rpc, case.message)
            after = await mesh.quiet()
    finally:
        # The next case compares with the mesh as this one left it, even when this one failed.
        mesh.baseline = after


# ---- the tests ---------------------------------------------------------------------------

# Requests that once answered INTERNAL or changed state while refused: replayed first, always.
REGRESSIONS: dict[str, list[Message]] = {}


def _fuzz_test(rpc: Rpc) -> Callable[..., Any]:
    async def test(mesh: Mesh, case: Case) -> None:
        await check(mesh, rpc, case)

    test.__doc__ = f"Hostile requests to {rpc.name}: never INTERNAL/UNKNOWN; refused ones change nothing."
    fuzzed = given(case=cases(rpc, SEEDS.get(rpc.name) or (lambda n: rpc.request_class()())))(test)
    for message in REGRESSIONS.get(rpc.name, []):
        fuzzed = example(case=Case(message))(fuzzed)
    return fuzzed


for _rpc in RPCS:
    globals()[f"test_fuzz_{_rpc.service.name}_{_rpc.method.name}"] = _fuzz_test(_rpc)


def test_every_rpc_has_a_seed_and_a_server() -> None:
    names = {rpc.name for rpc in RPCS}
    assert len(names) >= 40, sorted(names)  # the descriptors were found at all
    assert sorted(names - SEEDS.keys()) == [], "RPCs without a known-good request in SEEDS"
    assert sorted(SEEDS.keys() - names) == [], "SEEDS of RPCs that no longer exist"
    assert sorted({rpc.service.full_name for rpc in RPCS} - SERVERS.keys()) == [], "services without a server"
    tests = {name for name in globals() if name.startswith("test_fuzz_")}
    assert len(tests) == len(RPCS)


def test_every_seed_is_a_request_of_its_rpc(mesh_env: dict[str, str]) -> None:
    by_name = {rpc.name: rpc for rpc in RPCS}
    for name, seed in SEEDS.items():
        assert type(seed(0)).DESCRIPTOR is by_name[name].method.input_type, name


async def test_every_seed_is_accepted_as_well_formed(mesh: Mesh) -> None:
    # A mutation changes one field of a request that is otherwise right: a seed the service
    # refuses as malformed would make every mutation of it a test of that one refusal.
    refused = {}
    for rpc in RPCS:
        try:
            await mesh.caller(rpc)(SEEDS[rpc.name](7).SerializeToString(), timeout=CALL_TIMEOUT_S,
                                   metadata=mesh.session)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                refused[rpc.name] = err.details()
        await _restore(mesh, rpc, SEEDS[rpc.name](7))
        mesh.baseline = await mesh.quiet()
    assert refused == {}
