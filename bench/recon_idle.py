#!/usr/bin/env python3
"""recon_svc at rest over 1,000,000 settled orders: CPU of the recon process and of every
PostgreSQL process over 60 s without traffic, and the old way of adding up its totals on
the same data.

    .venv/bin/python -m bench.recon_idle [--orders 1000000] [--users 200000]
        [--seconds 60] [--baseline-timeout 120] [--keep]

Prints PostgreSQL's autovacuum setting first. Creates a scratch schema in DATABASE_URL's
database (default local PostgreSQL), migrates recon_svc's tables into it with autovacuum
off on each of them (so no statistics ever appear, whatever the server's setting) and
bulk-loads, with generate_series (bench/daily_recon.py's generator, one day of orders: 92 %
SUCCEEDED, 6 % FAILED and refunded, 2 % voided), what recon holds once it has followed
the mesh that far: orders judged ok, their entries and payouts, per-account balances, and
the running sums (one recount). No ANALYZE.

Then starts recon_svc as a process of its own on a free port against that schema, with
its default intervals (feeds polled every 200 ms, checker and self-checker every 200 ms,
audit every 10 s). Its three feeds are served, empty, by the real feed servicer in this
process over a scratch `changes` table, so recon is caught up and polls as in production.
Once every feed was read to its end, samples /proc/<pid>/stat (utime + stime) of the recon
process and of every process named postgres (the whole server: background processes,
recon's backends, the feed servicer's backends and anyone else's) once a second for
--seconds.

Then the old approach on the same data: the audit's former settled_payout_totals query,
run once with --baseline-timeout as statement_timeout, without statistics and again after
ANALYZE; and the recount that checks the running sums.

Prints
    RESULT recon_idle_core_pct X          (recon + every PostgreSQL process, % of one core)
    RESULT recon_idle_without_other_sessions_core_pct X'   (the same without the backends of
                                          other sessions on a shared server)
    RESULT recon_idle_old_totals_s Y      (the old totals query once, no statistics; > when cut off)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import grpc

from bench.daily_recon import CREDIT_FEN, DAY_START, LOAD_SQL
from mesh.feed.v1 import feed_pb2_grpc
from mesh.recon.v1 import recon_pb2, recon_pb2_grpc
from meshkit.db import create_pool, migrate
from meshkit.feed_servicer import ChangeFeedServicer
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, TlsSettings
from meshkit.transport import bind
from recon_svc.store.sums import RunningSums, running_and_recount
from recon_svc.sums import differences
from tools.loadlib.clients import open_channel, serving
from tools.meshctl import free_ports, own_certs

ROOT = Path(__file__).resolve().parent.parent

TABLES = ("r_orders", "r_entries", "r_payouts", "r_payout_events", "r_balances", "r_checks",
          "discrepancies", "r_totals", "feed_positions", "daily_reports")
CLK_TCK = os.sysconf("SC_CLK_TCK")

BALANCES_SQL = """
INSERT INTO r_balances (uid, credits, debits, refunds, balance, last_entry_id)
SELECT uid, coalesce(sum(amount) FILTER (WHERE kind = 'CREDIT'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'DEBIT'), 0),
       coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0),
       (array_agg(balance_after ORDER BY entry_id DESC))[1], max(entry_id)
FROM r_entries WHERE uid IS NOT NULL GROUP BY uid
"""

RECOUNT_SQL = """
INSERT INTO r_totals (name, count, fen) SELECT name, count, fen FROM r_totals_recount
ON CONFLICT (name) DO UPDATE SET count = excluded.count, fen = excluded.fen
"""

# What the audit ran every RECON_AUDIT_S before the running sums (recon_svc's repository,
# settled_payout_totals): every judged order joined with its payouts' sum.
OLD_TOTALS_SQL = """
SELECT count(*) AS orders,
       coalesce(sum(o.amount) FILTER (WHERE o.state = 'SUCCEEDED'), 0)::bigint AS orders_fen,
       coalesce(sum(p.paid), 0)::bigint AS paid_fen
FROM r_orders o
LEFT JOIN (SELECT order_id, sum(paid_sum) AS paid FROM r_payouts GROUP BY order_id) p
       USING (order_id)
WHERE o.state_rank = 3 AND o.checked_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM r_checks c WHERE c.order_id = o.order_id)
  AND NOT EXISTS (SELECT 1 FROM discrepancies d WHERE d.order_id = o.order_id)
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def load(pool: asyncpg.Pool, orders: int, users: int) -> None:
    start = time.monotonic()
    chunk = max(1, min(users, 20_000))
    for u0 in range(1, users + 1, chunk):
        u1 = min(users + 1, u0 + chunk)
        # One transaction per chunk: a long one would hold back every change feed on this
        # server (they hide rows of transactions younger than the oldest one running).
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(LOAD_SQL, u0, u1, users, DAY_START, orders, CREDIT_FEN)
        log(f"  loaded accounts {u0}..{u1 - 1} ({time.monotonic() - start:.0f}s)")
    await pool.execute(BALANCES_SQL)
    log(f"loaded {orders} orders and their balances in {time.monotonic() - start:.1f}s")
    t0 = time.perf_counter()
    await pool.execute(RECOUNT_SQL)
    log(f"running sums from one full recount: {time.perf_counter() - t0:.2f}s")


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def is_client_backend(pid: int) -> bool:
    """From the process title: a client backend's names its client ("127.0.0.1(5432)",
    "[local]"); the postmaster's and the background processes' do not."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().decode(errors="replace")
    except OSError:
        return False
    return "(" in title or "[local]" in title


async def measure(recon_pid: int, seconds: float) -> tuple[dict[int, int], set[int], float]:
    """CPU ticks used in the window per pid: the recon process and every postgres process
    (a process that starts during the window counts from its start; one that exits counts
    up to the last sample); and which of them were client backends."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    clients: set[int] = set()

    def sample(opening: bool) -> None:
        for pid in [recon_pid, *postgres_pids()]:
            ticks = cpu_ticks(pid)
            if ticks is not None:
                if pid not in first and pid != recon_pid and is_client_backend(pid):
                    clients.add(pid)
                first.setdefault(pid, ticks if opening else 0)
                last[pid] = ticks

    sample(opening=True)
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        await asyncio.sleep(min(1.0, seconds - elapsed))
        sample(opening=False)
    return {pid: last[pid] - first[pid] for pid in last}, clients, time.monotonic() - t0


@contextmanager
def recon_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "recon_svc"], cwd=ROOT,
                                env={**env, **own_certs("recon_svc", env)},
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_caught_up(address: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while not await serving(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"recon_svc did not start; see {log_path}")
        await asyncio.sleep(0.2)
    async with open_channel(address) as channel:
        stub = recon_pb2_grpc.ReconServiceStub(channel)
        while True:
            status = await stub.GetReconStatus(recon_pb2.GetReconStatusRequest(), timeout=10)
            if status.positions and all(p.HasField("head_time") for p in status.positions):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"recon_svc never read its feeds to the end; see {log_path}")
            await asyncio.sleep(0.2)


async def backends_of(pool: asyncpg.Pool, application: str) -> list[int]:
    rows = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", application)
    return [r["pid"] for r in rows]


async def time_old_totals(pool: asyncpg.Pool, timeout_s: float) -> str:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
        t0 = time.perf_counter()
        try:
            row = await conn.fetchrow(OLD_TOTALS_SQL)
        except asyncpg.QueryCanceledError:
            return f"> {timeout_s:.0f}"
        elapsed = time.perf_counter() - t0
    assert row is not None
    log(f"  old totals: {row['orders']} orders, {row['orders_fen']} fen succeeded, "
        f"{row['paid_fen']} fen paid")
    return f"{elapsed:.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch schemas")
    args = parser.parse_args()

    dsn = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    tag = uuid.uuid4().hex[:8]
    schema, feed_schema = f"recon_idle_{tag}", f"recon_idle_feed_{tag}"
    pool = await create_pool(dsn, schema, min_size=1, max_size=2)
    feed_pool = await create_pool(dsn, feed_schema, min_size=1, max_size=2)
    server = grpc.aio.server()
    started = False
    try:
        print(f"PostgreSQL autovacuum = {await pool.fetchval('SHOW autovacuum')}", flush=True)
        await migrate(pool, schema, ROOT / "recon_svc" / "migrations")
        for table in TABLES:
            await pool.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        log(f"scratch schema {schema}: loading {args.orders} orders over {args.users} accounts")
        await load(pool, args.orders, args.users)
        both = await running_and_recount(pool)
        running, recount = both.running, both.recount
        if differences(running, recount):
            raise SystemExit(f"running sums off after the load: {differences(running, recount)}")

        # The feeds, empty: the shared `changes` table only.
        await migrate(feed_pool, feed_schema, ROOT / "bench" / "no-migrations")
        feed_pb2_grpc.add_ChangeFeedServiceServicer_to_server(ChangeFeedServicer(feed_pool), server)
        # The empty feeds pose as account_svc (recon dials them with mutual TLS).
        pose = own_certs("account_svc", os.environ)
        feed_tls = TlsSettings(*(pose.get(f"MESH_TLS_{part}", "") for part in ("CA", "CERT", "KEY")))
        feed_address = f"127.0.0.1:{bind(server, '127.0.0.1:0', feed_tls)}"
        await server.start()
        started = True

        port = free_ports(1)[0]
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
            "DATABASE_URL": dsn,
            "REDIS_URL": os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            "MESH_KEY_PREFIX": f"bench-idle-{tag}",
            "RECON_SVC_DB_SCHEMA": schema,
            "RECON_SVC_PORT": str(port),
            "RECON_SVC_METRICS_PORT": "0",
            "ACCOUNT_SVC_ADDR": feed_address,
            "WITHDRAW_SVC_ADDR": feed_address,
            "GATEWAY_MOCK_ADDR": feed_address,
        }
        address = f"127.0.0.1:{port}"
        log_path = ROOT / ".run" / "bench" / f"recon_idle_{tag}" / "recon_svc.log"
        with recon_process(env, log_path) as proc:
            await wait_caught_up(address, proc, log_path)
            log(f"recon_svc (pid {proc.pid}) caught up; measuring {args.seconds:.0f}s without traffic")
            ticks, clients, window = await measure(proc.pid, args.seconds)
            # recon's and the feed servicer's pools keep their connections open throughout.
            recon_backends = await backends_of(pool, schema)
            feed_backends = await backends_of(pool, feed_schema)
            if proc.poll() is not None:
                raise SystemExit(f"recon_svc exited during the measurement; see {log_path}")

        def pct(pids: list[int]) -> float:
            return 100.0 * sum(ticks.get(p, 0) for p in pids) / CLK_TCK / window

        postgres = [p for p in ticks if p != proc.pid]
        ours = {*recon_backends, *feed_backends}
        # Everyone else's sessions on a shared server; the rest (postmaster, checkpointer,
        # WAL writer...) serves all of them.
        others = [p for p in postgres if p in clients and p not in ours]
        background = [p for p in postgres if p not in clients]
        log(f"over {window:.1f}s, % of one core: recon_svc process {pct([proc.pid]):.2f}, its "
            f"PostgreSQL backends {pct(recon_backends):.2f}, the feed servicer's backends "
            f"{pct(feed_backends):.2f}, PostgreSQL's own processes {pct(background):.2f}, other "
            f"sessions on this server ({len(others)} backends) {pct(others):.2f}")
        total = pct([proc.pid, *postgres])
        own = pct([proc.pid, *recon_backends, *feed_backends, *background])

        old = await time_old_totals(pool, args.baseline_timeout)
        log(f"baseline: the old settled_payout_totals once, no statistics: {old} s "
            f"(it ran every 10 s)")
        # This scratch schema's tables only: the rest of the server is other people's.
        await pool.execute(f"ANALYZE {', '.join(TABLES)}")
        analyzed = await time_old_totals(pool, args.baseline_timeout)
        log(f"baseline: the same after ANALYZE: {analyzed} s")
        t0 = time.perf_counter()
        both = await running_and_recount(pool)
        running, recount = both.running, both.recount
        recount_s = time.perf_counter() - t0
        log(f"running sums read + full recount: {recount_s:.2f}s, differences: "
            f"{differences(running, recount) or 'none'}")
        t0 = time.perf_counter()
        for _ in range(100):
            await RunningSums(pool).current()
        log(f"running sums alone: {(time.perf_counter() - t0) * 10:.2f} ms per read")
        print(f"RESULT recon_idle_core_pct {total:.2f}")
        print(f"RESULT recon_idle_without_other_sessions_core_pct {own:.2f}")
        print(f"RESULT recon_idle_old_totals_s {old}")
    finally:
        if started:
            await server.stop(0)
        if not args.keep:
            await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await pool.execute(f'DROP SCHEMA IF EXISTS "{feed_schema}" CASCADE')
        await feed_pool.close()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
