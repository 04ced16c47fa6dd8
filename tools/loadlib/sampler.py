"""Once a second: the driver's window of calls, order states of the run's orders (followed
on withdraw_svc's change feed, never its tables), and per-channel queue figures from
payout_svc. Every figure comes from an RPC; a service that is down leaves a gap (None)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from mesh.feed.v1 import feed_pb2
from mesh.payout.v1 import payout_pb2
from mesh.recon.v1 import recon_pb2
from meshkit.feed_records import read_change
from tools.loadlib.clients import MeshClients
from tools.loadlib.driver import Driver
from tools.loadlib.stats import Recorder

log = logging.getLogger(__name__)

STATES = ("PENDING_DEDUCT", "PENDING_PAYOUT", "PAYING", "SUCCEEDED", "FAILED")
TERMINAL = frozenset({"SUCCEEDED", "FAILED"})


def normalize_state(value: object) -> str:
    """Feed payloads may carry the enum name with or without its prefix, or its number."""
    if isinstance(value, int):
        return STATES[value - 1] if 1 <= value <= len(STATES) else "UNKNOWN"
    text = str(value or "").upper()
    return text.removeprefix("ORDER_STATE_") or "UNKNOWN"


class OrderTracker:
    """Follows withdraw_svc's change feed and keeps the latest state of every order whose
    uid lies in [uid_lo, uid_hi)."""

    def __init__(self, clients: MeshClients, uid_lo: int, uid_hi: int) -> None:
        self.clients = clients
        self.uid_lo = uid_lo
        self.uid_hi = uid_hi
        self.cursor = ""
        self.states: dict[str, str] = {}
        self.amounts: dict[str, int] = {}
        self.changes_read = 0
        # Loop time of the last state change seen (0: none yet): how the drain wait tells
        # that the mesh stopped moving orders.
        self.last_change_at = 0.0
        self._lock = asyncio.Lock()

    async def skip_to_end(self, page: int = 5000, timeout_s: float = 60.0) -> None:
        """Position the cursor after everything already in the feed (orders of earlier runs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            reply = await self.clients.withdraw_feed.ReadChanges(
                feed_pb2.ReadChangesRequest(cursor=self.cursor, limit=page), timeout=10.0,
                metadata=self.clients.metadata)
            if reply.next_cursor:
                self.cursor = reply.next_cursor
            if len(reply.changes) < page:
                return
        raise TimeoutError("withdraw change feed: could not reach its end in time")

    async def poll(self, max_pages: int = 20, page: int = 5000, timeout_s: float = 2.0) -> bool:
        """Read what is new; False when the feed did not answer."""
        async with self._lock:
            return await self._poll(max_pages, page, timeout_s)

    async def _poll(self, max_pages: int, page: int, timeout_s: float) -> bool:
        for _ in range(max_pages):
            try:
                reply = await self.clients.withdraw_feed.ReadChanges(
                    feed_pb2.ReadChangesRequest(cursor=self.cursor, limit=page), timeout=timeout_s,
                    metadata=self.clients.metadata)
            except grpc.aio.AioRpcError:
                return False
            for change in reply.changes:
                self._apply(change)
            if reply.next_cursor:
                self.cursor = reply.next_cursor
            if len(reply.changes) < page:
                break
        return True

    def _apply(self, change: feed_pb2.Change) -> None:
        self.changes_read += 1
        kind, payload = read_change(change)
        if kind != "order" or "state" not in payload:
            return
        try:
            uid = int(payload.get("uid") or 0)
        except (TypeError, ValueError):
            return
        if not self.uid_lo <= uid < self.uid_hi:
            return
        order_id = str(payload.get("order_id") or change.key)
        state = normalize_state(payload.get("state"))
        # Terminal states never change; a late, reordered non-terminal change must not undo one.
        before = self.states.get(order_id)
        if before in TERMINAL and state not in TERMINAL:
            return
        if before != state:
            self.last_change_at = asyncio.get_running_loop().time()
        self.states[order_id] = state
        with contextlib.suppress(TypeError, ValueError):
            self.amounts[order_id] = int(payload.get("amount_fen") or 0)

    def counts(self) -> dict[str, int]:
        counts = Counter(self.states.values())
        return {state: counts.get(state, 0) for state in STATES}

    def open_orders(self) -> int:
        return sum(1 for s in self.states.values() if s not in TERMINAL)

    def open_by_state(self) -> dict[str, int]:
        return {state: n for state, n in self.counts().items() if state not in TERMINAL and n}


async def channel_stats(clients: MeshClients, timeout_s: float = 1.0) -> dict[str, dict[str, float]] | None:
    try:
        reply = await clients.payout_admin.GetChannelStats(
            payout_pb2.GetChannelStatsRequest(), timeout=timeout_s, metadata=clients.metadata)
    except grpc.aio.AioRpcError:
        return None
    return {
        c.channel: {
            "backlog": c.backlog,
            "pending": c.pending,
            "consumers": c.consumers,
            "dead_letters": c.dead_letters,
            "rate_limit": c.rate_limit_per_second,
            "unlimited": c.unlimited,
            "paused": c.paused,
            "current_rate": c.current_rate_per_second,
        }
        for c in reply.channels
    }


async def recon_status(clients: MeshClients, timeout_s: float = 1.0) -> dict[str, int] | None:
    try:
        reply = await clients.recon.GetReconStatus(recon_pb2.GetReconStatusRequest(), timeout=timeout_s,
                                                   metadata=clients.metadata)
    except grpc.aio.AioRpcError:
        return None
    return {"pending_checks": reply.pending_checks, "checked_orders": reply.checked_orders,
            "open_discrepancies": reply.open_discrepancies}


@dataclass
class Sampler:
    """Ticks every interval and writes one row from the driver's window and the latest
    figures of the monitors. The monitors poll the services in their own tasks, so a slow
    or dead service leaves a stale or empty figure, never a late or missing row."""

    clients: MeshClients
    recorder: Recorder
    tracker: OrderTracker
    driver: Driver | None = None
    interval_s: float = 1.0
    say: Callable[[str], None] | None = print
    phase: str = "load"
    rows: list[dict[str, Any]] = field(default_factory=list)
    t0: float = 0.0
    # A figure older than this is shown as missing (None) rather than as if it were current.
    stale_after_s: float = 3.0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _latest: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def start(self, t0: float | None = None) -> None:
        """Sample every interval from t0 (loop time; default now), so rows line up with a
        timeline that started earlier."""
        self.t0 = asyncio.get_running_loop().time() if t0 is None else t0
        self._tasks = [
            asyncio.create_task(self._monitor("channels", lambda: channel_stats(self.clients))),
            asyncio.create_task(self._monitor("recon", lambda: recon_status(self.clients))),
            asyncio.create_task(self._monitor("orders", self._orders)),
            asyncio.create_task(self._tick()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def last(self) -> dict[str, Any] | None:
        return self.rows[-1] if self.rows else None

    async def _orders(self) -> dict[str, int] | None:
        return self.tracker.counts() if await self.tracker.poll() else None

    async def _monitor(self, name: str, fetch: Callable[[], Awaitable[Any]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                value = await fetch()
            except Exception:  # a monitor must never take the run down
                log.exception("monitor %s failed", name)
                value = None
            if value is not None:
                self._latest[name] = (loop.time(), value)
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))

    def _fresh(self, name: str, now: float) -> Any:
        at, value = self._latest.get(name, (0.0, None))
        return value if now - at <= self.stale_after_s else None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last_at = loop.time()
        while True:
            # Next multiple of the interval after now: a stalled loop skips ticks instead
            # of writing a burst of rows.
            elapsed = loop.time() - self.t0
            due = (elapsed // self.interval_s + 1) * self.interval_s
            await asyncio.sleep(due - elapsed)
            now = loop.time()
            try:
                # How late the tick fired: when this grows, the load tool's own event loop is
                # saturated and its figures (not only the mesh's) are suspect.
                self._row(now - self.t0, now - last_at, now, lag_ms=(now - self.t0 - due) * 1000.0)
            except Exception:
                log.exception("sample failed")
            last_at = now

    def _row(self, t: float, seconds: float, now: float, lag_ms: float) -> None:
        state = self.driver.state if self.driver is not None else None
        row: dict[str, Any] = {
            "t": round(t, 3),
            "phase": self.phase,
            "rpcs": self.recorder.roll(seconds),
            "inflight": state.inflight if state else 0,
            "skipped": state.skipped if state else 0,
            "loop_lag_ms": round(lag_ms, 1),
            "channels": self._fresh("channels", now),
            "orders": self._fresh("orders", now),
            "recon": self._fresh("recon", now),
        }
        self.rows.append(row)
        if self.say is not None:
            self.say(progress_line(row))


def progress_line(row: dict[str, Any]) -> str:
    rpcs = row["rpcs"]
    total = sum(r["rate"] for r in rpcs.values())
    errors = sum(sum(r["errors"].values()) for r in rpcs.values())
    shed = sum(r.get("shed", 0) for r in rpcs.values())
    confirm = rpcs.get("ConfirmWithdraw", {})
    p99 = confirm.get("p99")
    p99_text = f"{p99:.0f}ms" if p99 is not None else "-"
    ch = row["channels"]
    backlog = "down" if ch is None else str(sum(int(c["backlog"]) + int(c["pending"]) for c in ch.values()))
    dlq = "-" if ch is None else str(sum(int(c["dead_letters"]) for c in ch.values()))
    orders = row["orders"]
    open_orders = "-" if orders is None else str(sum(v for k, v in orders.items() if k not in TERMINAL))
    done = "-" if orders is None else str(orders["SUCCEEDED"] + orders["FAILED"])
    return (f"[{row['phase']:>5} {row['t']:6.1f}s] {total:7.1f} rpc/s  "
            f"confirm {confirm.get('rate', 0):6.1f}/s "
            f"p99 {p99_text:>6}  errors {errors:4d}  shed {shed:4d}  inflight {row['inflight']:5d}  "
            f"queue {backlog:>6}  dlq {dlq:>4}  orders open {open_orders:>6} done {done:>6}")
