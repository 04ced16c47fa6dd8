"""Helpers (no tests here) for recon's integration tests: a private database, change feeds served by the
real meshkit feed servicer over the peers' schemas, and a writer that appends to those
feeds the rows the peers (or a bug in them) would have committed."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc

from mesh.feed.v1 import feed_pb2_grpc
from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from meshkit import changefeed
from meshkit.db import create_pool, migrate
from meshkit.feed_servicer import ChangeFeedServicer
from meshkit.timeconv import utcnow
from meshkit.transport import bind
from tests import harness
from tests.harness import new_id, new_uid
from tests.waiting import eventually

SHANGHAI = ZoneInfo("Asia/Shanghai")
FEED_SCHEMAS = {"account": "account", "withdraw": "withdraw", "gateway": "gateway"}
NO_MIGRATIONS = Path(__file__).parent / "no-such-dir"


@dataclass
class FeedServer:
    schema: str
    pool: asyncpg.Pool
    port: int = 0
    server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server()
        feed_pb2_grpc.add_ChangeFeedServiceServicer_to_server(ChangeFeedServicer(self.pool), server)
        # Stands in for account_svc's feed: recon dials it with mutual TLS.
        self.port = bind(server, f"127.0.0.1:{self.port}", harness.tls_as("account_svc"))
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def open_feed_server(dsn: str, schema: str) -> FeedServer:
    pool = await create_pool(dsn, schema, min_size=1, max_size=2)
    await migrate(pool, schema, NO_MIGRATIONS)  # only the shared `changes` table
    feed = FeedServer(schema, pool)
    await feed.start()
    return feed


@dataclass
class Writer:
    """Appends to the feeds what the orchestrator, the ledger and the gateway commit."""

    feeds: dict[str, FeedServer]
    balances: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    entry_ids: Any = field(default_factory=lambda: itertools.count(1))

    async def change(self, feed: str, kind: str, key: str, payload: dict[str, Any]) -> None:
        async with self.feeds[feed].pool.acquire() as conn:
            await changefeed.append(conn, kind, key, payload)

    async def order(self, order_id: str, uid: int, amount: int, state: str, *,
                    created_at: datetime | None = None, channel: str = "bank", from_state: str = "") -> None:
        now = utcnow()
        await self.change("withdraw", "order", order_id, {
            "order_id": order_id, "uid": uid, "request_id": order_id, "amount_fen": amount,
            "channel": channel, "method_id": f"m-{uid}", "from_state": from_state or None, "state": state,
            "reason": "", "failure_reason": "closed account" if state == "FAILED" else "",
            "created_at": (created_at or now).isoformat(), "updated_at": now.isoformat(),
        })

    async def entry(self, kind: str, uid: int, amount: int, *, order_id: str = "", reward_id: str = "",
                    balance_after: int | None = None) -> int:
        entry_id = next(self.entry_ids)
        if kind != "VOID":
            delta = {"CREDIT": amount, "DEBIT": -amount, "REFUND": amount}[kind]
            self.balances[uid] += delta
        after = None if kind == "VOID" else (self.balances[uid] if balance_after is None else balance_after)
        await self.change("account", "entry", order_id or reward_id, {
            "entry_id": entry_id, "uid": None if kind == "VOID" else uid, "kind": kind,
            "amount_fen": amount, "order_id": order_id or None, "reward_id": reward_id or None,
            "balance_after_fen": after, "created_at": utcnow().isoformat(),
        })
        return entry_id

    async def payout(self, order_id: str, uid: int, amount: int, state: str, **extra: Any) -> None:
        await self.change("gateway", "payout", order_id, {
            "order_id": order_id, "uid": uid, "channel": "bank", "method_id": f"m-{uid}",
            "amount_fen": amount, "state": state, "failure_reason": "", **extra,
        })

    # ---- whole legitimate lives of orders ----

    async def funded_user(self, amount: int = 100_000) -> int:
        uid = new_uid()
        await self.entry("CREDIT", uid, amount, reward_id=new_id("r"))
        return uid

    async def start_order(self, amount: int, uid: int | None = None) -> tuple[str, int]:
        uid = uid or await self.funded_user()
        oid = new_id("o")
        await self.order(oid, uid, amount, "PENDING_DEDUCT")
        return oid, uid

    async def succeeded(self, amount: int = 500, *, debit: bool = True, payout_amount: int | None = None,
                        uid: int | None = None) -> tuple[str, int]:
        oid, uid = await self.start_order(amount, uid)
        if debit:
            await self.entry("DEBIT", uid, amount, order_id=oid)
        await self.order(oid, uid, amount, "PENDING_PAYOUT")
        await self.order(oid, uid, amount, "PAYING")
        await self.payout(oid, uid, amount if payout_amount is None else payout_amount, "PROCESSING")
        await self.payout(oid, uid, amount if payout_amount is None else payout_amount, "SUCCEEDED")
        await self.order(oid, uid, amount, "SUCCEEDED")
        return oid, uid

    async def failed_refunded(self, amount: int = 500, *, refund: bool = True,
                              uid: int | None = None) -> tuple[str, int]:
        oid, uid = await self.start_order(amount, uid)
        await self.entry("DEBIT", uid, amount, order_id=oid)
        await self.order(oid, uid, amount, "PENDING_PAYOUT")
        await self.order(oid, uid, amount, "PAYING")
        await self.payout(oid, uid, amount, "FAILED")
        await self.order(oid, uid, amount, "FAILED")
        if refund:
            await self.entry("REFUND", uid, amount, order_id=oid)
        return oid, uid

    async def failed_voided(self, amount: int = 500) -> tuple[str, int]:
        oid, uid = await self.start_order(amount)
        await self.order(oid, uid, amount, "FAILED")
        await self.entry("VOID", uid, 0, order_id=oid)
        return oid, uid


class Recon:
    """A client of the recon service under test."""

    def __init__(self, address: str) -> None:
        self.channel = harness.channel(address)
        self.stub = recon_pb2_grpc.ReconServiceStub(self.channel)

    async def found(
        self, order_id: str = "", source: str = "", reason: str = ""
    ) -> list[recon_pb2.Discrepancy]:
        reply = await self.stub.ListDiscrepancies(recon_pb2.ListDiscrepanciesRequest(
            order_id=order_id, source=source, reason=reason, page_size=1000), timeout=5)
        return list(reply.discrepancies)

    async def reasons(self, order_id: str, source: str = "realtime") -> set[str]:
        return {d.reason for d in await self.found(order_id, source)}

    async def wait_reasons(self, order_id: str, source: str = "realtime", timeout: float = 5.0) -> set[str]:
        return await eventually(lambda: self.reasons(order_id, source), bool, timeout=timeout)

    async def daily(self, day: str) -> dict[str, Any]:
        reply = await self.stub.RunDailyRecon(recon_pb2.RunDailyReconRequest(date=day), timeout=60)
        report: dict[str, Any] = json.loads(reply.report.report_json)
        return report

    async def close(self) -> None:
        await self.channel.close()


def today() -> str:
    return datetime.now(SHANGHAI).date().isoformat()


def day_of(at: datetime) -> str:
    return at.astimezone(SHANGHAI).date().isoformat()


def daily_reasons(report: dict[str, Any], order_id: str) -> set[str]:
    return {d["reason"] for d in report["discrepancies"] if d["order_id"] == order_id}

