"""payout_svc end to end with no rate limit and a fast gateway, against a raw
XREADGROUP + XACK loop over the same messages in the same run.

    .venv/bin/python -m bench.payout_unlimited [--orders 3000]

Uses the private mesh of bench/payout_drain.py (own ports, schemas and key prefix; real
orders placed through ConfirmWithdraw, their jobs put on the stream by withdraw_svc's
outbox relay). Before payout_svc starts, the stream's entries are copied to a scratch
stream. Then:

- payout_svc: `--processes` processes x `--workers` workers drain the channel, opened
  (as in payout_drain) with SetChannelRate(unlimited: true), and no gateway latency or
  capacity limit. Per message a
  worker takes the order lock, reads the order, moves it to PAYING, calls the gateway,
  settles the order and acknowledges: payouts/s = orders / (first gateway call .. every
  order SUCCEEDED).
- raw: the same number of concurrent readers (processes x workers coroutines, in this one
  process) doing XREADGROUP COUNT 1 + XACK over the copied entries, nothing else: the
  ceiling the stream transport alone allows with this concurrency shape.

Last lines:
    RESULT payout_unlimited_per_s X
    RESULT payout_raw_stream_per_s Y
    RESULT payout_vs_raw_stream <X / Y>
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.payout_drain import (
    BenchMesh,
    cpu_report,
    cpu_seconds,
    gateway_call_times,
    prepare,
    private_mesh,
    say,
    start_paused_then_open,
    wait_settled,
)
from meshkit.redis_client import open_redis

RAW_GROUP = "raw"


async def copy_stream(bench: BenchMesh) -> str:
    """Copy the channel's backlog to a scratch stream for the raw loop."""
    client = open_redis(bench.env["REDIS_URL"], env=bench.env)
    source = bench.keys.payout_stream(bench.channel)
    target = f"{bench.env['MESH_KEY_PREFIX']}:bench:raw"
    try:
        entries: Any = await client.xrange(source)
        async with client.pipeline(transaction=False) as pipe:
            for _entry_id, fields in entries:
                pipe.xadd(target, fields)
            await pipe.execute()
        await client.xgroup_create(target, RAW_GROUP, id="0")
    finally:
        await client.aclose()
    return target


async def raw_loop(url: str, stream: str, readers: int, expected: int) -> float:
    """Messages per second for `readers` concurrent XREADGROUP COUNT 1 + XACK loops."""
    client = open_redis(url, max_connections=readers + 4)
    done = 0

    async def reader(n: int) -> None:
        nonlocal done
        while done < expected:
            reply: Any = await client.xreadgroup(RAW_GROUP, f"raw-{n}", {stream: ">"}, count=1, block=200)
            for _, entries in reply or []:
                for entry_id, _fields in entries:
                    await client.xack(stream, RAW_GROUP, entry_id)
                    done += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(reader(n) for n in range(readers)))
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="PAYOUT_WORKERS_PER_CHANNEL")
    parser.add_argument("--channel", default="balance")
    parser.add_argument("--keep", action="store_true", help="keep schemas and Redis keys")
    args = parser.parse_args()
    readers = args.processes * args.workers

    with private_mesh(args.channel, keep=args.keep) as bench:
        asyncio.run(prepare(bench, args.orders))
        raw_stream = asyncio.run(copy_stream(bench))
        opened, cpu_before = start_paused_then_open(bench, args.processes, args.workers, 0.0)
        settled_at = asyncio.run(wait_settled(bench, args.orders, timeout=600))
        cpu = cpu_report(cpu_before, cpu_seconds(bench.pids()), settled_at - opened)
        every_call = asyncio.run(gateway_call_times(bench))
        bench.stop()  # the raw loop gets the machine to itself, as payout_svc had
        say(f"raw loop: {readers} readers over {args.orders} copied entries")
        raw_rate = asyncio.run(raw_loop(bench.env["REDIS_URL"], raw_stream, readers, args.orders))

    if len(every_call) != args.orders:
        raise SystemExit(f"the gateway recorded {len(every_call)} payouts for {args.orders} orders")
    calls = [t for t in every_call if t >= opened]
    drain = settled_at - calls[0]
    payout_rate = len(calls) / drain
    print()
    print(f"payout_svc: {len(calls)} orders in {drain:.2f}s (first gateway call .. all SUCCEEDED) "
          f"with {args.processes} processes x {args.workers} workers: {payout_rate:.0f} payouts/s "
          f"({len(every_call) - len(calls)} paid before the channel opened)")
    print(f"CPU of one core during the drain: {cpu}")
    print(f"raw XREADGROUP COUNT 1 + XACK, {readers} readers: {raw_rate:.0f} messages/s")
    print(f"RESULT payout_unlimited_per_s {payout_rate:.1f}")
    print(f"RESULT payout_raw_stream_per_s {raw_rate:.1f}")
    print(f"RESULT payout_vs_raw_stream {payout_rate / raw_rate:.4f}")


if __name__ == "__main__":
    main()
