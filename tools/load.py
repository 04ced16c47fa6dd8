#!/usr/bin/env python3
"""Full-link load test against the running mesh (`make up` first).

    make load LOAD_ARGS="--users 2000 --rate 20 --duration 30"
    python tools/load.py --rate 0 --concurrency 64       # closed-loop maximum

Seeds test users (uids in a reserved range, one block per run; see tools/loadlib/seeding.py)
with a bound payout method each and accounts funded by signed reward tokens, drives a mix of
withdraw-page views, confirms and order queries open-loop at the target confirm rate, samples
the mesh every second, waits for the payout queues to drain, and writes
.run/reports/load-<timestamp>/report.json and report.html with plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from mesh.withdraw.v1 import withdraw_pb2
from tools.loadlib import gate
from tools.loadlib.clients import MeshClients
from tools.loadlib.driver import Driver, DriverConfig, DriverState, parse_mix
from tools.loadlib.report import new_report_dir, summary_table, write_report
from tools.loadlib.runner import Drain, cpu_seconds, funding_per_user, rate_figures, wait_drained
from tools.loadlib.sampler import OrderTracker, Sampler, channel_stats
from tools.loadlib.seeding import (
    RUN_BLOCK,
    TEST_UID_BASE,
    SeedResult,
    discover_channels,
    new_run_slot,
    run_uids,
    seed_users,
)
from tools.loadlib.stats import Recorder

ROOT = Path(__file__).resolve().parent.parent


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/load.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=2000, help="test users to seed (default 2000)")
    # 20 confirms/s is 120 calls/s with the default mix: what this 2-core dev machine
    # sustains beside the five services without queueing. Raise it to find the knee.
    p.add_argument("--rate", type=float, default=20.0,
                   help="target confirms per second, open loop; 0 = closed-loop maximum (default 20)")
    p.add_argument("--concurrency", type=int, default=64, help="callers when --rate 0 (default 64)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    p.add_argument("--mix", default="page=3,confirm=1,order=2",
                   help="relative weights of page, confirm, order")
    p.add_argument("--amount-min", type=int, default=100, help="smallest order, fen (default 100)")
    p.add_argument("--amount-max", type=int, default=500, help="largest order, fen (default 500)")
    p.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, seconds")
    p.add_argument("--run-slot", type=int, default=-1, help="uid block of this run (default: random)")
    p.add_argument("--fund-via", choices=["stream", "force"], default="stream",
                   help="credit rewards through the ingest stream (default) or ForceCredit")
    p.add_argument("--drain-timeout", type=float, default=180.0, help="bound on the wait for the queues")
    p.add_argument("--gate", choices=["open", "keep"], default="open",
                   help="open: if the gate refuses test users, open it for the run and restore it after "
                        "(audited); keep: leave it as it is")
    p.add_argument("--report-dir", type=Path, default=None, help="parent of load-<timestamp>/ "
                   "(default .run/reports)")
    p.add_argument("--quiet", action="store_true", help="no per-second progress lines")
    return p


def say(line: str) -> None:
    print(line, flush=True)


async def run(args: argparse.Namespace) -> int:
    mix = parse_mix(args.mix)
    if args.users <= 0 or args.duration <= 0 or args.rate < 0:
        raise SystemExit("--users and --duration must be > 0, --rate >= 0")
    if not 100 <= args.amount_min <= args.amount_max:
        raise SystemExit("need 100 <= --amount-min <= --amount-max (the minimum order is 1 yuan)")
    clients = MeshClients.from_env(caller="load-test")
    try:
        missing = await clients.wait_serving(timeout=20.0)
        if missing:
            say(f"load: not serving: {', '.join(missing)} ({clients.addresses}); "
                "start the mesh with `make up`")
            return 2
        return await _run(clients, args, mix)
    except (RuntimeError, TimeoutError) as exc:
        say(f"load: {exc}")
        return 1
    except grpc.aio.AioRpcError as exc:
        say(f"load: {exc.code().name} {exc.details()}")
        return 1
    finally:
        await clients.close()


@dataclass(frozen=True)
class LoadPlan:
    """One run: its uid block, tag, driver settings and the channels it spreads users over."""

    run_slot: int
    uids: list[int]
    run_tag: str
    config: DriverConfig
    channels: list[str]
    funding_fen: int

    @property
    def uid_range(self) -> tuple[int, int]:
        return self.uids[0], self.uids[-1] + 1


@dataclass(frozen=True)
class LoadOutcome:
    """What the load phase and the drain after it came to."""

    state: DriverState
    summary: dict[str, Any]
    load_seconds: float
    cpu_seconds: float
    max_loop_lag_ms: float | None
    drain: Drain
    gate_changed: bool


async def _run(clients: MeshClients, args: argparse.Namespace, mix: dict[str, int]) -> int:
    plan = await _plan(clients, args, mix)
    uid_lo, uid_hi = plan.uid_range
    say(f"load: run {plan.run_tag}: {args.users} test users uid {uid_lo}..{uid_hi - 1} "
        f"(test range starts at {TEST_UID_BASE}, {RUN_BLOCK} uids per run), "
        f"channels {', '.join(plan.channels)}")
    tracker = OrderTracker(clients, uid_lo, uid_hi)
    await tracker.skip_to_end()
    seeded = await seed_users(clients, plan.uids, plan.funding_fen, run_slot=plan.run_slot,
                              channels=plan.channels, fund_via=args.fund_via, say=say)
    gate_before = await gate.get_config(clients)
    gate_changed = args.gate == "open" and await _open_gate_if_refused(clients, gate_before, plan)
    if gate_changed is None:
        return 1
    report_dir = new_report_dir("load", args.report_dir)
    recorder = Recorder()
    driver = Driver(clients, seeded.users, plan.config, recorder)
    sampler = Sampler(clients, recorder, tracker, driver=driver, say=None if args.quiet else say)
    started_wall = datetime.now(UTC)
    try:
        outcome = await _drive(clients, args, driver, sampler, recorder, tracker, gate_changed)
    finally:
        await sampler.stop()
        if gate_changed:
            await gate.restore(clients, gate_before, f"load test {plan.run_tag}: restore",
                               lambda line: say(f"load: {line}"))
    report = _report(clients, args, plan, seeded, outcome, tracker.counts(),
                     await channel_stats(clients, timeout_s=3.0), started_wall)
    paths = write_report(report_dir, report, sampler.rows, title=f"Load test {plan.run_tag}")
    _say_outcome(args, outcome, report, paths["html"])
    return 0 if outcome.drain.drained else 1


async def _plan(clients: MeshClients, args: argparse.Namespace, mix: dict[str, int]) -> LoadPlan:
    run_slot = args.run_slot if args.run_slot >= 0 else new_run_slot()
    run_tag = f"load-{run_slot}-{int(time.time())}"
    config = DriverConfig(rate=args.rate, duration_s=args.duration, mix=mix, concurrency=args.concurrency,
                          amount_min_fen=args.amount_min, amount_max_fen=args.amount_max,
                          timeout_s=args.timeout, run_tag=run_tag, seed=run_slot)
    return LoadPlan(run_slot, run_uids(run_slot, args.users), run_tag, config,
                    await discover_channels(clients), funding_per_user(config, args.users))


async def _open_gate_if_refused(clients: MeshClients, before: withdraw_pb2.GateConfig,
                                plan: LoadPlan) -> bool | None:
    """Open the gate for the run if it refuses test users (audited; restored after). True if
    it was changed, None if it did not open in time."""
    probe = plan.uids[:10]
    if await gate.wait_gate(clients, probe, want_open=True, timeout_s=0.0):
        return False
    await gate.set_config(clients, gate.open_config(before), reason=f"load test {plan.run_tag}: open")
    if not await gate.wait_gate(clients, probe, want_open=True, timeout_s=15.0):
        say("load: the gate did not open for test users within 15 s")
        return None
    say("load: gate opened for the run (will be restored)")
    return True


async def _drive(clients: MeshClients, args: argparse.Namespace, driver: Driver, sampler: Sampler,
                 recorder: Recorder, tracker: OrderTracker, gate_changed: bool) -> LoadOutcome:
    """The load itself, then the wait for the payout queues to drain."""
    cpu0 = cpu_seconds()
    sampler.start()
    mode = (f"open loop at {args.rate:g} confirms/s" if args.rate > 0
            else f"closed loop, {args.concurrency} callers")
    say(f"load: driving {args.mix} for {args.duration:g}s, {mode}")
    state = await driver.run()
    load_seconds = state.stopped_at - state.started_at
    cpu_load = cpu_seconds() - cpu0
    summary = recorder.summary(load_seconds)
    sampler.phase = "drain"
    say(f"load: stopped after {load_seconds:.1f}s; waiting for the payout queues to drain "
        f"(at most {args.drain_timeout:g}s)")
    drain = await wait_drained(clients, tracker, args.drain_timeout, expected_orders=len(state.order_ids))
    lag = max((r["loop_lag_ms"] for r in sampler.rows if r["phase"] == "load"), default=None)
    return LoadOutcome(state, summary, load_seconds, cpu_load, lag, drain, gate_changed)


def _report(clients: MeshClients, args: argparse.Namespace, plan: LoadPlan, seeded: SeedResult,
            outcome: LoadOutcome, counts: dict[str, int], end_channels: Any,
            started_wall: datetime) -> dict[str, Any]:
    uid_lo, uid_hi = plan.uid_range
    state, drain, load_seconds = outcome.state, outcome.drain, outcome.load_seconds
    return {
        "kind": "load",
        "config": {
            "run": plan.run_tag, "run_slot": plan.run_slot, "users": args.users,
            "test_uids": f"{uid_lo}..{uid_hi - 1}",
            "test_traffic": (f"uids in [{uid_lo}, {uid_hi}); request ids start with '{plan.run_tag}-'; "
                             "reward ids 'lt-<uid>-<n>' with source 'load_test'; method ids 'lt-<uid>'"),
            "rate_confirms_per_s": args.rate, "concurrency": args.concurrency if args.rate == 0 else None,
            "duration_s": args.duration, "mix": args.mix,
            "amount_fen": f"{args.amount_min}..{args.amount_max}",
            "funding_per_user_fen": plan.funding_fen, "channels": ", ".join(plan.channels),
            "started": started_wall.isoformat(timespec="seconds"), "addresses": clients.addresses,
            "gate": "opened for the run and restored" if outcome.gate_changed else "left as it was",
        },
        "seed": {"bind_s": round(seeded.bind_seconds, 2), "fund_s": round(seeded.fund_seconds, 2),
                 "credited_by_stream": seeded.credited_by_stream,
                 "credited_by_force": seeded.credited_by_force},
        "summary": outcome.summary,
        "results": {
            **rate_figures(outcome.summary, load_seconds),
            "load_seconds": round(load_seconds, 2),
            "calls_issued": state.issued,
            "calls_skipped_client_overload": state.skipped,
            "confirms_skipped_no_budget": state.no_budget,
            "orders_confirmed": len(state.order_ids),
            "orders_unanswered": state.unanswered_confirms,
            "confirms_shed": state.shed_confirms,
            "orders_by_state": counts,
            "load_tool_cpu_s": round(outcome.cpu_seconds, 2),
            "load_tool_cpu_share": round(outcome.cpu_seconds / load_seconds, 3) if load_seconds else None,
            "load_tool_max_loop_lag_ms": outcome.max_loop_lag_ms,
        },
        "drain": {"drained": drain.drained, "seconds": round(drain.seconds, 2),
                  "left_for_compensation": drain.open_by_state, "queued": drain.queued,
                  "dead_letters": drain.dead_letters, "timeout_s": args.drain_timeout},
        "channels_end": end_channels,
    }


def _say_outcome(args: argparse.Namespace, outcome: LoadOutcome, report: dict[str, Any], html: Path) -> None:
    drain, results = outcome.drain, report["results"]
    say("")
    say(summary_table(outcome.summary))
    say("")
    if drain.drained:
        drain_text = f"queues drained {drain.seconds:.1f}s after the load"
    else:
        drain_text = f"NOT drained after {drain.seconds:.1f}s ({drain.queued} queued)"
    if drain.open_by_state:
        drain_text += f"; left for the compensation job: {drain.open_by_state}"
    p50, p99 = results["confirm_p50_ms"], results["confirm_p99_ms"]
    target = f"target {args.rate:g}/s" if args.rate > 0 else f"closed loop, {args.concurrency} callers"
    say(f"confirms: {len(outcome.state.order_ids)} ok at {results['confirm_ok_per_s']:.1f}/s "
        f"({target}), p50 {p50} ms, p99 {p99} ms; orders {json.dumps(results['orders_by_state'])}; "
        f"{drain_text}")
    say(f"report: {html}")


def main() -> int:
    args = parser().parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
