"""recon_svc against change feeds: the real feed servicer over the peers' `changes` tables in
a private database, written to as the peers (or a bug in them) would. Each planted fault
must come out as exactly its class, for exactly its order, within 5 s and in the daily
report; legitimate orders must come out clean."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import grpc
import pytest

from mesh.recon.v1 import recon_pb2
from meshkit.server import RunningServer
from meshkit.timeconv import from_ts, utcnow
from tests.harness import create_database, drop_database, new_id, new_uid, start_service
from tests.integration.test_recon_support import (
    FEED_SCHEMAS,
    FeedServer,
    Recon,
    Writer,
    daily_reasons,
    day_of,
    eventually,
    open_feed_server,
    today,
)

# Subjects (order ids, uid:<n>) where a fault was planted on purpose: the only ones allowed
# to carry a discrepancy at the end of this module.
PLANTED: set[str] = set()


class WebhookReceiver:
    """A minimal HTTP endpoint that records the JSON bodies posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        self.bodies.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class World:
    writer: Writer
    recon: Recon
    feeds: dict[str, FeedServer]
    hook: WebhookReceiver
    db: asyncpg.Pool
    running: RunningServer
    env: dict[str, str]

    async def restart_recon(self, before_start: Callable[[], Awaitable[object]]) -> None:
        await self.recon.close()
        await self.running.stop(0.5)
        await before_start()
        self.running = await start_service("recon_svc", self.env)
        self.recon = Recon(self.running.address)

    async def checked(self, order_id: str) -> bool:
        at = await self.db.fetchval("SELECT checked_at FROM recon.r_orders WHERE order_id = $1", order_id)
        return at is not None

    async def wait_checked(self, *order_ids: str, timeout: float = 5.0) -> bool:
        async def all_checked() -> bool:
            n = await self.db.fetchval(
                "SELECT count(*) FROM recon.r_orders WHERE order_id = ANY($1) AND checked_at IS NOT NULL",
                list(order_ids))
            return bool(n == len(order_ids))
        return await eventually(all_checked, bool, timeout=timeout)


@pytest.fixture(scope="module")
async def world(mesh_env: dict[str, str]) -> AsyncIterator[World]:
    base = mesh_env["DATABASE_URL"]
    dsn = await create_database(base)
    feeds = {name: await open_feed_server(dsn, schema) for name, schema in FEED_SCHEMAS.items()}
    hook = WebhookReceiver()
    await hook.start()
    env = {
        "DATABASE_URL": dsn,
        "ACCOUNT_SVC_ADDR": feeds["account"].address,
        "WITHDRAW_SVC_ADDR": feeds["withdraw"].address,
        "GATEWAY_MOCK_ADDR": feeds["gateway"].address,
        "RECON_GRACE_S": "1", "RECON_REFUND_GRACE_S": "2", "RECON_POLL_MS": "100", "RECON_CHECK_MS": "100",
        "RECON_SELF_CHECK": "false", "RECON_STUCK_AFTER_S": "600", "RECON_AUDIT_S": "0.3",
        "RECON_DB_POOL_SIZE": "4",
        "RECON_WEBHOOK_URL": f"http://127.0.0.1:{hook.port}/hook",
    }
    running = await start_service("recon_svc", env)
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    world = World(Writer(feeds), Recon(running.address), feeds, hook, db, running, env)
    try:
        yield world
    finally:
        await world.recon.close()
        await world.running.stop(0.5)
        await db.close()
        for feed in feeds.values():
            await feed.stop()
            await feed.pool.close()
        await hook.stop()
        await drop_database(base, dsn)


async def test_legitimate_orders_come_out_clean(world: World) -> None:
    w = world.writer
    orders = []
    for i in range(10):
        orders.append((await w.succeeded(100 + i))[0])
        orders.append((await w.failed_refunded(200 + i))[0])
        orders.append((await w.failed_voided(300 + i))[0])
    in_flight, _ = await w.start_order(400)
    assert await world.wait_checked(*orders), "every settled order gets a verdict within 5 s"
    for oid in [*orders, in_flight]:
        assert await world.recon.reasons(oid) == set(), oid
    verdicts = await world.db.fetch("SELECT DISTINCT verdict FROM recon.r_orders WHERE order_id = ANY($1)",
                                    orders)
    assert [r["verdict"] for r in verdicts] == ["ok"]
    assert not await world.checked(in_flight), "an order in flight is not judged"


# ---- one planted fault per class ----

Plant = Callable[[Writer], Awaitable[str]]


async def plant_missing_debit(w: Writer) -> str:
    return (await w.succeeded(500, debit=False))[0]


async def plant_double_debit(w: Writer) -> str:
    oid, uid = await w.succeeded(500)
    await w.entry("DEBIT", uid, 500, order_id=oid)  # the ledger took it twice
    return oid


async def plant_debit_without_order(w: Writer) -> str:
    uid = await w.funded_user()
    oid = new_id("ghost")
    await w.entry("DEBIT", uid, 700, order_id=oid)
    return oid


async def plant_missing_refund(w: Writer) -> str:
    return (await w.failed_refunded(600, refund=False))[0]


async def plant_refund_on_succeeded(w: Writer) -> str:
    oid, uid = await w.succeeded(500)
    await w.entry("REFUND", uid, 500, order_id=oid)
    return oid


async def plant_payout_without_debit(w: Writer) -> str:
    oid = new_id("ghost")
    await w.payout(oid, new_uid(), 900, "SUCCEEDED")
    return oid


async def plant_double_payout(w: Writer) -> str:
    oid, uid = await w.succeeded(500)
    # A second record reaching SUCCEEDED for the same order: the money left twice.
    await w.payout(oid, uid, 500, "SUCCEEDED")
    return oid


async def plant_amount_mismatch(w: Writer) -> str:
    return (await w.succeeded(500, payout_amount=5000))[0]


async def plant_state_mismatch(w: Writer) -> str:
    oid, uid = await w.failed_refunded(800)
    await w.payout(oid, uid, 800, "SUCCEEDED")  # the gateway paid an order marked FAILED
    return oid


async def plant_stuck_order(w: Writer) -> str:
    uid = await w.funded_user()
    oid = new_id("o")
    await w.order(oid, uid, 500, "PAYING", created_at=utcnow() - timedelta(hours=1))
    return oid


PLANTS: dict[str, Plant] = {
    "missing_debit": plant_missing_debit,
    "double_debit": plant_double_debit,
    "debit_without_order": plant_debit_without_order,
    "missing_refund": plant_missing_refund,
    "refund_on_succeeded": plant_refund_on_succeeded,
    "payout_without_debit": plant_payout_without_debit,
    "double_payout": plant_double_payout,
    "amount_mismatch": plant_amount_mismatch,
    "state_mismatch": plant_state_mismatch,
    "stuck_order": plant_stuck_order,
}


@pytest.fixture(scope="module")
async def planted(world: World) -> dict[str, tuple[str, datetime]]:
    """Every fault planted at once, with the time its plant was complete."""
    async def one(reason: str) -> tuple[str, tuple[str, datetime]]:
        oid = await PLANTS[reason](world.writer)
        PLANTED.add(oid)
        return reason, (oid, utcnow())

    return dict(await asyncio.gather(*(one(r) for r in PLANTS)))


@pytest.mark.parametrize("reason", list(PLANTS))
async def test_planted_fault_is_reported_as_its_class(
    world: World, planted: dict[str, tuple[str, datetime]], reason: str
) -> None:
    oid, planted_at = planted[reason]
    found = await eventually(lambda: world.recon.found(oid, "realtime"), bool, timeout=6.0)
    assert {d.reason for d in found} == {reason}
    detected = from_ts(found[0].create_time)
    assert detected is not None and (detected - planted_at).total_seconds() < 5.0
    created = await world.db.fetchval("SELECT created_at FROM recon.r_orders WHERE order_id = $1", oid)
    report = await world.recon.daily(day_of(created) if created else today())
    assert daily_reasons(report, oid) == {reason}
    stored = await world.recon.found(oid, source="daily")
    assert {d.reason for d in stored} == {reason}


async def test_double_refund_arriving_after_the_check_is_caught_on_recheck(world: World) -> None:
    w = world.writer
    oid, uid = await w.failed_refunded(450)
    PLANTED.add(oid)
    assert await world.wait_checked(oid)
    assert await world.recon.reasons(oid) == set()
    await w.entry("REFUND", uid, 450, order_id=oid)  # a second refund, after the verdict
    assert await world.recon.wait_reasons(oid) == {"double_refund"}
    assert daily_reasons(await world.recon.daily(today()), oid) == {"double_refund"}


async def test_ledger_conservation_breach_is_reported_for_its_account(world: World) -> None:
    w = world.writer
    uid = new_uid()
    await w.entry("CREDIT", uid, 1000, reward_id=new_id("r"))
    # A credit whose balance moved by 500 fen more than the entry says (money from nowhere).
    await w.entry("CREDIT", uid, 300, reward_id=new_id("r"), balance_after=1800)
    w.balances[uid] = 1800
    subject = f"uid:{uid}"
    PLANTED.add(subject)

    async def found() -> list[recon_pb2.Discrepancy]:
        return [d for d in await world.recon.found(reason="conservation", source="realtime")
                if d.subject == subject]

    hits = await eventually(found, bool, timeout=5.0)
    assert len(hits) == 1 and hits[0].uid == uid and "off by 500" in hits[0].detail
    report = await world.recon.daily(today())
    assert [d["uid"] for d in report["discrepancies"] if d["subject"] == subject] == [uid]


async def test_webhook_received_the_findings(world: World) -> None:
    async def posted() -> set[str]:
        return {str(b.get("order_id")) for b in world.hook.bodies if b.get("source") == "realtime"}
    got = await eventually(posted, lambda s: s >= {p for p in PLANTED if not p.startswith("uid:")})
    assert got >= {p for p in PLANTED if not p.startswith("uid:")}
    sample = next(b for b in world.hook.bodies if b.get("reason") == "double_debit")
    assert sample["event"] == "discrepancy" and sample["status"] == "OPEN"


async def test_stalled_feed_delays_verdicts_instead_of_raising_false_ones(world: World) -> None:
    gateway = world.feeds["gateway"]
    await gateway.stop()
    try:
        oid, _ = await world.writer.succeeded(321)
        # Without the gateway's side recon must not judge: it would see no payout.
        waited = await eventually(lambda: world.checked(oid), bool, timeout=2.5)
        assert not waited
    finally:
        await gateway.start()
    assert await world.wait_checked(oid, timeout=20.0)
    assert await world.recon.reasons(oid) == set()


async def test_replaying_every_feed_from_the_start_changes_nothing(world: World) -> None:
    status = await world.recon.stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
    before = await world.recon.found()
    cursors = {p.feed: p.cursor for p in status.positions}
    # As after a crash that lost every stored position: a new process reads all feeds again.
    await world.restart_recon(lambda: world.db.execute("UPDATE recon.feed_positions SET cursor = ''"))

    async def caught_up() -> dict[str, str]:
        s = await world.recon.stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
        return {p.feed: p.cursor for p in s.positions}

    assert await eventually(caught_up, lambda c: c == cursors, timeout=10.0) == cursors
    await eventually(lambda: world.db.fetchval("SELECT count(*) FROM recon.r_checks"), lambda n: n == 0)
    after = await world.recon.stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
    for field in ("credits_fen", "debits_fen", "refunds_fen", "balances_fen", "gateway_succeeded_fen",
                  "orders_succeeded_fen"):
        assert getattr(after, field) == getattr(status, field), field
    assert [d.discrepancy_id for d in await world.recon.found()] == [d.discrepancy_id for d in before]


async def test_two_replicas_share_the_feeds_without_counting_twice(world: World) -> None:
    second = await start_service("recon_svc", world.env)
    try:
        w = world.writer
        orders = [(await w.succeeded(110 + i))[0] for i in range(5)]
        orders += [(await w.failed_refunded(120 + i))[0] for i in range(5)]
        oid, uid = await w.succeeded(130)
        await w.entry("DEBIT", uid, 130, order_id=oid)
        PLANTED.add(oid)
        assert await world.wait_checked(*orders, oid)
        assert await world.recon.wait_reasons(oid) == {"double_debit"}
        assert len(await world.recon.found(oid, "realtime")) == 1
        for clean in orders:
            assert await world.recon.reasons(clean) == set()
    finally:
        await second.stop(0.5)


async def test_status_totals_add_up_except_for_the_planted_breach(world: World) -> None:
    s = await world.recon.stub.GetReconStatus(recon_pb2.GetReconStatusRequest())
    assert s.credits_fen > 0 and s.debits_fen > 0 and s.refunds_fen > 0
    # The one account planted with 500 fen from nowhere is the whole difference.
    assert s.balances_fen - (s.credits_fen - s.debits_fen + s.refunds_fen) == 500
    assert {p.feed for p in s.positions} == {"account", "withdraw", "gateway"}
    assert all(p.applied > 0 for p in s.positions)


# ---- the admin RPCs ----

async def test_resolve_discrepancy(world: World) -> None:
    stub = world.recon.stub
    [target] = await world.recon.found(next(p for p in PLANTED if not p.startswith("uid:")), "realtime")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ResolveDiscrepancy(recon_pb2.ResolveDiscrepancyRequest(
            discrepancy_id=target.discrepancy_id, status=recon_pb2.DISCREPANCY_STATUS_RESOLVED))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ResolveDiscrepancy(recon_pb2.ResolveDiscrepancyRequest(
            discrepancy_id=target.discrepancy_id, status=recon_pb2.DISCREPANCY_STATUS_OPEN, note="x"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ResolveDiscrepancy(recon_pb2.ResolveDiscrepancyRequest(
            discrepancy_id=10**12, status=recon_pb2.DISCREPANCY_STATUS_ACCEPTED, note="x"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    reply = await stub.ResolveDiscrepancy(recon_pb2.ResolveDiscrepancyRequest(
        discrepancy_id=target.discrepancy_id, status=recon_pb2.DISCREPANCY_STATUS_ACCEPTED,
        note="planted by the test"))
    assert reply.discrepancy.status == recon_pb2.DISCREPANCY_STATUS_ACCEPTED
    assert reply.discrepancy.note == "planted by the test"
    accepted = await stub.ListDiscrepancies(recon_pb2.ListDiscrepanciesRequest(
        status=recon_pb2.DISCREPANCY_STATUS_ACCEPTED))
    assert [d.discrepancy_id for d in accepted.discrepancies] == [target.discrepancy_id]
    still_open = await stub.ListDiscrepancies(recon_pb2.ListDiscrepanciesRequest(
        status=recon_pb2.DISCREPANCY_STATUS_OPEN, page_size=1000))
    assert target.discrepancy_id not in {d.discrepancy_id for d in still_open.discrepancies}


async def test_list_filters_and_bad_input(world: World) -> None:
    stub = world.recon.stub
    only = await stub.ListDiscrepancies(recon_pb2.ListDiscrepanciesRequest(reason="double_payout"))
    assert only.discrepancies and {d.reason for d in only.discrepancies} == {"double_payout"}
    assert {d.reason_kind for d in only.discrepancies} == {recon_pb2.DISCREPANCY_REASON_DOUBLE_PAYOUT}
    typed = await stub.ListDiscrepancies(recon_pb2.ListDiscrepanciesRequest(
        reason_kind=recon_pb2.DISCREPANCY_REASON_DOUBLE_PAYOUT))
    assert [d.discrepancy_id for d in typed.discrepancies] == [d.discrepancy_id for d in only.discrepancies]
    assert all(d.source_kind != recon_pb2.DISCREPANCY_SOURCE_UNSPECIFIED for d in typed.discrepancies)
    two = await stub.ListDiscrepancies(recon_pb2.ListDiscrepanciesRequest(page_size=2))
    assert len(two.discrepancies) == 2
    assert two.discrepancies[0].discrepancy_id > two.discrepancies[1].discrepancy_id
    # Paging two at a time lists what one page lists, newest first, nothing skipped or
    # repeated (a discrepancy found meanwhile is newer than all of them: left out).
    whole = [d.discrepancy_id for d in (await stub.ListDiscrepancies(
        recon_pb2.ListDiscrepanciesRequest(page_size=1000))).discrepancies]
    paged: list[int] = []
    token = ""
    while True:
        page = await stub.ListDiscrepancies(recon_pb2.ListDiscrepanciesRequest(page_size=2, page_token=token))
        paged += [d.discrepancy_id for d in page.discrepancies]
        token = page.next_page_token
        if not token:
            break
    assert len(whole) > 2 and [i for i in paged if i <= whole[0]] == whole
    for bad in (recon_pb2.ListDiscrepanciesRequest(reason="nonsense"),
                recon_pb2.ListDiscrepanciesRequest(page_size=-1)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListDiscrepancies(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_daily_report_rpcs(world: World) -> None:
    stub = world.recon.stub
    for bad in ("2026-13-01", "", "20261101"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RunDailyRecon(recon_pb2.RunDailyReconRequest(date=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetDailyReport(recon_pb2.GetDailyReportRequest(date="1999-01-01"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    ran = await stub.RunDailyRecon(recon_pb2.RunDailyReconRequest(date=today()))
    got = await stub.GetDailyReport(recon_pb2.GetDailyReportRequest(date=today()))
    assert got.report.report_json == ran.report.report_json
    report = json.loads(got.report.report_json)
    assert report["orders"] == got.report.orders > 30
    assert set(report["by_state"]) >= {"SUCCEEDED", "FAILED"}
    assert report["by_channel"]["bank"]["orders"] == report["orders"]
    realtime = await world.recon.found(reason="double_debit", source="realtime")
    assert report["discrepancy_counts"]["double_debit"] == len(realtime) == 2
    assert "Daily reconciliation" in got.report.report_text and "double_debit" in got.report.report_text
    assert got.report.discrepancies == len(report["discrepancies"])


async def test_nothing_but_the_planted_faults_was_reported(world: World) -> None:
    subjects = {d.subject for d in await world.recon.found()}
    assert subjects == PLANTED
