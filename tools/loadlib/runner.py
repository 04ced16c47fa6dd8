"""Pieces both tools run around the driver: sizing the funding, waiting for the payout
queues to drain, and the closing figures."""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from typing import Any

from tools.loadlib.clients import MeshClients
from tools.loadlib.driver import DriverConfig
from tools.loadlib.sampler import OrderTracker, channel_stats

# Closed-loop runs have no target rate; size their funding for this many confirms per second.
ASSUMED_MAX_CONFIRMS_PER_S = 1500


def funding_per_user(config: DriverConfig, users: int) -> int:
    """Enough for every confirm the run can send with 50% headroom: the driver keeps a
    per-user budget, so a too-small funding shows up as skipped confirms, never as refusals."""
    if config.mix.get("confirm", 0) == 0:
        return config.amount_max_fen
    rate = config.rate if config.rate > 0 else ASSUMED_MAX_CONFIRMS_PER_S
    per_user = rate * config.duration_s * 1.5 / max(1, users)
    return (math.ceil(per_user) + 2) * config.amount_max_fen


@dataclass
class Drain:
    drained: bool
    # From the end of the load to the last order transition or queued message seen.
    seconds: float
    # Orders not terminal once the mesh went quiet: left for the compensation job.
    open_by_state: dict[str, int]
    queued: int | None
    dead_letters: int | None


async def wait_drained(clients: MeshClients, tracker: OrderTracker, timeout_s: float,
                       expected_orders: int = 0, quiet_s: float = 3.0) -> Drain:
    """Wait (bounded) until the payout streams are empty (no backlog, nothing pending) and
    no order of the run has changed state for quiet_s. Orders still open then are not
    being worked on (a deduct whose outcome was unknown, a dead letter): the compensation
    job owns them, and the report lists them."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout_s
    busy_at = started
    queued: int | None = None
    dead: int | None = None
    while True:
        await tracker.poll()
        stats = await channel_stats(clients)
        now = loop.time()
        if stats is None:
            queued = dead = None
            busy_at = now
        else:
            queued = sum(int(c["backlog"] + c["pending"]) for c in stats.values())
            dead = sum(int(c["dead_letters"]) for c in stats.values())
            if queued:
                busy_at = now
        busy_at = max(busy_at, tracker.last_change_at)
        if len(tracker.states) < expected_orders:
            busy_at = now
        if now - busy_at >= quiet_s:
            return Drain(True, max(0.0, busy_at - started), tracker.open_by_state(), queued, dead)
        if now >= deadline:
            return Drain(False, now - started, tracker.open_by_state(), queued, dead)
        await asyncio.sleep(0.25)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def rate_figures(summary: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    confirm = summary.get("ConfirmWithdraw", {})
    calls = sum(s["calls"] for s in summary.values())
    shed = sum(s.get("shed", 0) for s in summary.values())
    return {
        "confirm_ok_per_s": round(confirm.get("ok", 0) / seconds, 2) if seconds else 0.0,
        "confirm_p50_ms": confirm.get("p50"),
        "confirm_p95_ms": confirm.get("p95"),
        "confirm_p99_ms": confirm.get("p99"),
        "all_calls_per_s": round(sum(s["calls"] for s in summary.values()) / seconds, 2) if seconds else 0.0,
        "shed_ratio": round(shed / calls, 5) if calls else 0.0,
        "confirm_shed_ratio": confirm.get("shed_rate", 0.0),
    }
