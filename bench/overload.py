"""Graceful overload: at twice the mesh's capacity, is the excess refused fast while the
admitted confirms stay quick, and does any call end DEADLINE_EXCEEDED?

    .venv/bin/python -m bench.overload [--users 400 --step 5 --overload 12]

Always on a private mesh (gateway_mock, account_svc, withdraw_svc as processes on free ports,
schemas bench_<run>_*, Redis key prefix bench-<run>, as bench/payout_drain.py does): the
comparison restarts withdraw_svc with admission off and on, which must not happen to the mesh
`make up` started for someone else. No payout_svc runs: orders stop at PENDING_PAYOUT, which
is all a confirm's latency depends on.

1. seeds `--users` test users (tools/loadlib seeding), admission off (MESH_ADMISSION_ENABLED=false);
2. capacity: the seed's mix (3 GetWithdrawPage + 2 GetOrder per ConfirmWithdraw), open loop,
   `--step` seconds per rate, doubling from `--start` until a step fails (confirm p99 over
   100 ms or any call not OK), or halving until one passes, then one bisection; capacity is
   the highest passing rate (`--capacity` skips the search);
3. drives 2x capacity for `--overload` seconds with admission off, restarts withdraw_svc with
   admission on (defaults of MESH_ADMISSION_*, or as set in the environment), drives the same
   again. Shed confirms are not retried here (--shed-retries 0), so an admitted confirm's
   latency is that of one attempt.

Everything it created is removed at the end. Last lines (the admission-on run):
    RESULT overload_capacity_confirms_per_s <c>
    RESULT overload_admitted_confirm_p99_ms <x>
    RESULT overload_deadline_exceeded <n>
    RESULT overload_shed_ratio <r>
and the same for admission off as overload_off_*.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.payout_drain import BenchMesh, say
from tools import meshctl
from tools.loadlib.clients import MeshClients
from tools.loadlib.driver import Driver, DriverConfig, parse_mix
from tools.loadlib.runner import funding_per_user
from tools.loadlib.seeding import TestUser, new_run_slot, run_uids, seed_users
from tools.loadlib.stats import SHED, Recorder

ROOT = Path(__file__).resolve().parent.parent

MIX = "page=3,confirm=1,order=2"
CAPACITY_P99_MS = 100.0
CHANNEL = "bank"


@dataclass
class Step:
    rate: float
    confirm_p99_ms: float | None
    confirms_ok: int
    deadline_exceeded: int
    not_ok: int
    shed: int
    calls: int
    codes: dict[str, int]
    # The load generator's own event-loop lag (max over the run): when it is large, the
    # latencies above are partly the generator's, not the mesh's.
    generator_lag_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return self.not_ok == 0 and self.confirm_p99_ms is not None and self.confirm_p99_ms <= CAPACITY_P99_MS

    @property
    def shed_ratio(self) -> float:
        return self.shed / self.calls if self.calls else 0.0

    def line(self) -> str:
        p99 = "-" if self.confirm_p99_ms is None else f"{self.confirm_p99_ms:.0f} ms"
        return (f"{self.rate:6.1f} confirms/s: confirm p99 {p99}, {self.confirms_ok} confirms ok, "
                f"shed {self.shed}/{self.calls} ({self.shed_ratio:.1%}), "
                f"DEADLINE_EXCEEDED {self.deadline_exceeded}, codes {self.codes}, "
                f"generator loop lag max {self.generator_lag_ms:.0f} ms")


async def drive(env: dict[str, str], users: list[TestUser], rate: float, seconds: float,
                tag: str, shed_retries: int) -> Step:
    clients = MeshClients.from_env("overload-bench", environ=env)
    try:
        config = DriverConfig(rate=rate, duration_s=seconds, mix=parse_mix(MIX), timeout_s=5.0,
                              shed_retries=shed_retries, run_tag=tag, seed=int(rate))
        recorder = Recorder()
        lag = asyncio.create_task(loop_lag_max())
        try:
            await Driver(clients, users, config, recorder).run()
        finally:
            lag.cancel()
            lag_ms = await lag
    finally:
        await clients.close()
    summary = recorder.summary(seconds)
    codes: dict[str, int] = {}
    for stats in summary.values():
        codes["OK"] = codes.get("OK", 0) + stats["ok"]
        if stats["shed"]:
            codes[SHED] = codes.get(SHED, 0) + stats["shed"]
        for code, n in stats["errors"].items():
            codes[code] = codes.get(code, 0) + n
    calls = sum(codes.values())
    confirm: dict[str, Any] = summary.get("ConfirmWithdraw", {})
    return Step(rate, confirm.get("p99"), confirm.get("ok", 0), codes.get("DEADLINE_EXCEEDED", 0),
                calls - codes.get("OK", 0) - codes.get(SHED, 0), codes.get(SHED, 0), calls, codes, lag_ms)


async def loop_lag_max(every_s: float = 0.05) -> float:
    """Until cancelled: the most a short sleep overran, in ms (returned on cancel)."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    try:
        while True:
            before = loop.time()
            await asyncio.sleep(every_s)
            worst = max(worst, (loop.time() - before - every_s) * 1000.0)
    except asyncio.CancelledError:
        return worst


async def seed(env: dict[str, str], users: int, funding_fen: int) -> list[TestUser]:
    clients = MeshClients.from_env("overload-bench", environ=env)
    try:
        slot = new_run_slot()
        seeded = await seed_users(clients, run_uids(slot, users), funding_fen, run_slot=slot,
                                  channels=[CHANNEL], say=say, environ=env)
    finally:
        await clients.close()
    return seeded.users


def capacity(env: dict[str, str], users: list[TestUser],
             args: argparse.Namespace) -> tuple[float, list[Step]]:
    steps: list[Step] = []

    def step(rate: float) -> Step:
        result = asyncio.run(drive(env, users, rate, args.step, f"ov-cap-{int(rate)}-{time.time_ns()}", 0))
        say("  " + result.line())
        steps.append(result)
        return result

    # Up by doubling from --start while steps pass; down by halving while they fail (a busy
    # box); then one bisection between the last pass and the first fail.
    passed, failed = 0.0, 0.0
    rate = args.start
    going_up = step(rate).passed
    if going_up:
        passed = rate
        while rate * 2 <= args.max_rate:
            rate *= 2
            if not step(rate).passed:
                failed = rate
                break
            passed = rate
    else:
        failed = rate
        while rate / 2 >= args.min_rate:
            rate /= 2
            if step(rate).passed:
                passed = rate
                break
            failed = rate
    if passed and failed:
        middle = (passed + failed) / 2
        if step(middle).passed:
            passed = middle
    best = passed
    return best, steps


def restart_withdraw(bench: BenchMesh, admission: bool) -> None:
    bench.env["MESH_ADMISSION_ENABLED"] = "true" if admission else "false"
    meshctl.stop("withdraw_svc", bench.layout, grace=8.0)
    meshctl.up(bench.env, bench.layout, services=("withdraw_svc",))
    say(f"withdraw_svc restarted with admission {'on' if admission else 'off'}")


def report(prefix: str, step: Step) -> None:
    p99 = -1.0 if step.confirm_p99_ms is None else step.confirm_p99_ms
    print(f"RESULT {prefix}_admitted_confirm_p99_ms {p99:.1f}")
    print(f"RESULT {prefix}_deadline_exceeded {step.deadline_exceeded}")
    print(f"RESULT {prefix}_shed_ratio {step.shed_ratio:.4f}")
    print(f"RESULT {prefix}_generator_lag_max_ms {step.generator_lag_ms:.0f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=400, help="test users to seed (default 400)")
    p.add_argument("--start", type=float, default=20.0, help="first rate of the capacity search (confirms/s)")
    p.add_argument("--max-rate", type=float, default=640.0, help="highest rate the search tries")
    p.add_argument("--min-rate", type=float, default=1.0, help="lowest rate the search tries")
    p.add_argument("--capacity", type=float, default=0.0,
                   help="skip the search and take this capacity (confirms/s)")
    p.add_argument("--step", type=float, default=5.0, help="seconds per capacity step (default 5)")
    p.add_argument("--overload", type=float, default=12.0, help="seconds of each 2x run (default 12)")
    p.add_argument("--keep", action="store_true", help="keep the private mesh's schemas and keys")
    args = p.parse_args()

    bench = BenchMesh.create(CHANNEL)
    bench.env["MESH_ADMISSION_ENABLED"] = "false"
    say(f"private mesh {bench.run_id}: logs in {bench.run_dir}")
    try:
        bench.start_core()
        # Enough for every step at the search's highest rate and both overload runs.
        seconds = args.step * 8 + args.overload * 2 + 3.0
        funding = funding_per_user(DriverConfig(rate=args.max_rate, duration_s=seconds,
                                                mix=parse_mix(MIX)), args.users)
        users = asyncio.run(seed(bench.env, args.users, funding))
        # Connections, pools and caches warm up before anything is measured.
        warm = asyncio.run(drive(bench.env, users, args.start, 3.0, f"ov-warm-{time.time_ns()}", 0))
        say("  warm-up (not counted): " + warm.line())
        say(f"capacity search ({MIX}, p99 <= {CAPACITY_P99_MS:.0f} ms, every call OK), admission off:")
        cap = args.capacity or capacity(bench.env, users, args)[0]
        if cap <= 0:
            say("no rate passed: the box is too busy to find a capacity")
            return 1
        rate = cap * 2
        say(f"capacity {cap:.1f} confirms/s; overload at {rate:.1f} confirms/s for {args.overload:g}s")
        off = asyncio.run(drive(bench.env, users, rate, args.overload, f"ov-off-{time.time_ns()}", 0))
        say("  admission off: " + off.line())
        restart_withdraw(bench, admission=True)
        on = asyncio.run(drive(bench.env, users, rate, args.overload, f"ov-on-{time.time_ns()}", 0))
        say("  admission on:  " + on.line())
    finally:
        bench.stop()
        if not args.keep:
            asyncio.run(bench.cleanup())
    print(f"RESULT overload_capacity_confirms_per_s {cap:.1f}")
    report("overload_off", off)
    report("overload", on)
    return 0


if __name__ == "__main__":
    sys.exit(main())
