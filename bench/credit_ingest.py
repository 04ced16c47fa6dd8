"""How fast rewards are credited: through the bulk path (ingest stream -> account_svc's
consumer) and through ForceCredit, against a raw asyncpg batch insert of the same number
of rows in the same run.

    .venv/bin/python -m bench.credit_ingest [--rewards 50000 --uids 5000]

Runs against account_svc at ACCOUNT_SVC_ADDR (default 127.0.0.1:50051); when nothing
answers there it starts `python -m account_svc` on that port (own key prefix and schema,
dropped after) and stops it after. Fresh uids and reward ids every run.

Bulk: N signed rewards published to the ingest stream's partitions (campaign.publish
packing), timed until the consumer group has acknowledged them all on every partition and
the database holds N credits.
Raw: the same number of credit-shaped rows inserted with asyncpg executemany, in batches of
the bulk path's size, into an unindexed scratch table (COPY shown for reference). Bulk and
raw alternate for --rounds rounds; each bulk round is compared with the raw runs around it
and the median ratio is reported. With our own service, CPU per credit (service process and
its PostgreSQL backends, from /proc) is printed too: steadier than wall time on a shared
machine.

Consumers: the same N rewards credited by 1 and then by 2 account_svc consumer processes
of their own (free ports, own key prefix and schema, stopped after; a running mesh's
account_svc is not touched), alternating for --consumer-rounds rounds. On a 2-core box the
consumers share the cores with PostgreSQL, so 2 processes cannot double the rate there.

Last lines:
    RESULT credit_bulk_per_s X        (median over rounds)
    RESULT credit_force_per_s Y
    RESULT credit_sql_only_vs_raw_insert S   (the ledger statement alone, no Python work)
    RESULT credit_2_vs_1_consumers C  (median of per-round 2-process/1-process rates)
    RESULT credit_vs_raw_insert R     (median of per-round bulk/raw)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as redis

from account_svc.repository import LedgerRepository
from account_svc.streams import GROUP, partitions_of, unsettled
from bench import pgstate
from campaign.partitions import partitions_from
from campaign.publish import publish_rewards
from campaign.tokens import RewardGrant, keyring_from_env
from mesh.account.v1 import account_pb2, account_pb2_grpc
from meshkit.db import create_pool, migrate
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools.loadlib.clients import open_channel, serving
from tools.loadlib.cpu import read_stat
from tools.meshctl import free_ports, own_certs

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    address: str
    prefix: str
    schema: str
    # Our own account_svc processes (none when a running service is used): every one a
    # consumer of the same prefix and schema.
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def own(self) -> bool:
        return bool(self.processes)


def _service_log() -> Any:
    path = ROOT / ".run" / "bench-account_svc.log"
    path.parent.mkdir(exist_ok=True)
    return path.open("ab")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process (all its threads) has used so far."""
    stat = read_stat(pid)
    return stat.cpu_s if stat is not None else 0.0


@dataclass
class CpuMeter:
    """CPU used by a set of processes between start() and stop(); on a machine shared with
    other work this is steadier than wall time, so both are reported."""

    pids: list[int]
    used: float = 0.0
    by_pid: dict[int, float] = field(default_factory=dict)

    def start(self) -> None:
        self._start = {pid: cpu_seconds(pid) for pid in self.pids}

    def stop(self) -> float:
        self.by_pid = {pid: cpu_seconds(pid) - before for pid, before in self._start.items()}
        self.used = sum(self.by_pid.values())
        return self.used


async def backends_of(pool: asyncpg.Pool, application_name: str) -> list[int]:
    return [r["pid"] for r in await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name)]


async def ensure_service(address: str, client: redis.Redis, partitions: int) -> Target:
    schema = os.environ.get("ACCOUNT_SVC_DB_SCHEMA") or "account"
    if await serving(address):
        prefix = os.environ.get("MESH_KEY_PREFIX") or "mesh"
        await _check_partitioned(client, Keys(prefix), partitions, address)
        print(f"using the account_svc running at {address}", file=sys.stderr)
        return Target(address, prefix, schema)
    run = uuid.uuid4().hex[:8]
    # A schema of its own: fresh tables, and its PostgreSQL backends are told apart by
    # application name (= schema), so their CPU can be measured.
    target = Target(address, f"bench-{run}", f"account_bench_{run}")
    await add_consumer(target, address)
    return target


async def _check_partitioned(client: redis.Redis, keys: Keys, partitions: int, address: str) -> None:
    """A consumer that predates the partitioned stream would never read what is published
    here: say so instead of waiting for ever."""
    for partition in partitions_of(keys, partitions):
        try:
            groups: Any = await client.xinfo_groups(partition.stream)
        except redis.ResponseError:  # no such key: nobody made the group
            groups = []
        if not any(g["name"] in (GROUP, GROUP.encode()) for g in groups):
            raise SystemExit(
                f"the account_svc at {address} does not consume {partition.stream} (started before "
                "partitioned ingest, or with fewer ACCOUNT_CREDIT_PARTITIONS): restart it, or set "
                "ACCOUNT_SVC_ADDR to a free port so that this script starts its own")


async def add_consumer(target: Target, address: str = "") -> None:
    """One more `python -m account_svc` of the target's prefix and schema, at `address` (or
    on free ports), without its metrics listener; returns once it serves."""
    if not address:
        grpc_port, admin_port = free_ports(2)
        address = f"127.0.0.1:{grpc_port}"
    else:
        admin_port = free_ports(1)[0]
    host, _, port = address.rpartition(":")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}", "MESH_KEY_PREFIX": target.prefix,
           "ACCOUNT_SVC_HOST": host or "127.0.0.1", "ACCOUNT_SVC_PORT": port,
           "ACCOUNT_SVC_ADMIN_PORT": str(admin_port), "ACCOUNT_SVC_METRICS_PORT": "0",
           "ACCOUNT_SVC_DB_SCHEMA": target.schema}
    # A private, throw-away ledger: the development key rules unless the caller chose.
    env.setdefault("MESH_ENV", "dev")
    env.update(own_certs("account_svc", env))
    log = _service_log()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "account_svc", cwd=ROOT, env=env,
                                                   stdout=log, stderr=log)
    log.close()
    print(f"started account_svc pid {process.pid} on {address} (prefix {target.prefix})", file=sys.stderr)
    deadline = time.monotonic() + 30
    while not await serving(address):
        if process.returncode is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise SystemExit("account_svc did not become healthy; see .run/bench-account_svc.log")
        await asyncio.sleep(0.2)
    target.processes.append(process)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=20)
    except TimeoutError:
        process.kill()
        await process.wait()


async def stop_service(target: Target) -> None:
    while target.processes:
        await stop_process(target.processes.pop())


async def drop_own(target: Target, client: redis.Redis, dsn: str, partitions: int) -> None:
    """Leave nothing of our own namespace behind in Redis, nor our schema."""
    keys = Keys(target.prefix)
    with contextlib.suppress(Exception):
        await client.delete(keys.rewards_ingest(), keys.rewards_rejected(),
                            *[k for p in partitions_of(keys, partitions) for k in (p.stream, p.rejected)])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{target.schema}" CASCADE')
    finally:
        await conn.close()


def sign_all(count: int, uids: list[int], tag: str) -> list[str]:
    ring = keyring_from_env(os.environ)
    now = int(time.time())
    rng = random.Random(tag)
    return [
        ring.sign(RewardGrant(f"bench-{tag}-{i}", uids[i % len(uids)], rng.randint(1, 888), "red_packet",
                              now))
        for i in range(count)
    ]


async def credits_of(pool: asyncpg.Pool, uids: list[int]) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM entries WHERE kind = 'CREDIT' AND uid = ANY($1::bigint[])", uids))


@dataclass
class LockWaits:
    """How often the target's PostgreSQL backends were seen busy, and how often of those
    waiting for another transaction's row lock (consumers of two processes queueing on the
    account rows their batches share) or for another lock (extending a table or an index),
    sampled from pg_stat_activity."""

    active: int = 0
    rows: int = 0
    other: int = 0

    async def sample(self, pool: asyncpg.Pool, application_name: str, stop: asyncio.Event) -> None:
        while not stop.is_set():
            row = await pool.fetchrow(
                "SELECT count(*) FILTER (WHERE state = 'active') AS active,"
                " count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'"
                "                  AND wait_event IN ('transactionid', 'tuple')) AS rows,"
                " count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'"
                "                  AND wait_event NOT IN ('transactionid', 'tuple')) AS other"
                " FROM pg_stat_activity WHERE application_name = $1", application_name)
            if row is not None:
                self.active += int(row["active"])
                self.rows += int(row["rows"])
                self.other += int(row["other"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.05)

    def __str__(self) -> str:
        busy = max(1, self.active)
        return (f"; of {self.active} busy backend samples {self.rows / busy:.0%} waited on a row "
                f"lock, {self.other / busy:.0%} on another lock")


async def bench_bulk(target: Target, client: redis.Redis, pool: asyncpg.Pool, count: int,
                     uid_count: int, profile: str, partitions: int, what: str = "bulk") -> float:
    base = random.randint(10**12, 9 * 10**12)
    uids = [base + i for i in range(uid_count)]
    tokens = sign_all(count, uids, uuid.uuid4().hex[:8])
    keys = Keys(target.prefix)
    service_pids = [p.pid for p in target.processes]
    meter = CpuMeter([*service_pids, *await backends_of(pool, target.schema)] if target.own else [])
    spy = None
    if profile and target.own:
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(service_pids[0]),
            # Full file names: tools/pyspy_summary.py tells project code from libraries by path.
            "-o", profile, "--format", "raw", "--full-filenames", "-r", "200",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(1.0)
    locks = LockWaits()
    sampled = asyncio.Event()
    sampler = asyncio.create_task(locks.sample(pool, target.schema, sampled)) if target.own else None
    meter.start()
    started = time.perf_counter()
    await publish_rewards(client, keys, tokens, uids=[uids[i % len(uids)] for i in range(count)],
                          partitions=partitions)
    published = time.perf_counter() - started
    while True:
        if await unsettled(client, keys, partitions) == 0 and await credits_of(pool, uids) >= count:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    meter.stop()
    sampled.set()
    if sampler is not None:
        await sampler
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.wait(), timeout=60)
    cpu = ""
    if target.own:
        service_cpu = sum(meter.by_pid.get(pid, 0.0) for pid in service_pids)
        cpu = (f"; CPU per credit: account_svc {service_cpu * 1e6 / count:.1f} us + its PostgreSQL "
               f"backends {(meter.used - service_cpu) * 1e6 / count:.1f} us{locks}")
    print(f"{what}: {count} rewards over {uid_count} uids credited in {elapsed:.2f} s "
          f"({count / elapsed:.0f}/s; publishing took {published:.2f} s){cpu}", file=sys.stderr)
    return count / elapsed


async def bench_force(target: Target, count: int, uid_count: int, callers: int, per_call: int) -> float:
    base = random.randint(10**12, 9 * 10**12)
    uids = [base + i for i in range(uid_count)]
    tokens = sign_all(count, uids, uuid.uuid4().hex[:8])
    by_uid: dict[int, list[str]] = {}
    for i, token in enumerate(tokens):
        by_uid.setdefault(uids[i % uid_count], []).append(token)
    calls = [(uid, chunk[j:j + per_call]) for uid, chunk in by_uid.items()
             for j in range(0, len(chunk), per_call)]
    random.shuffle(calls)
    queue: asyncio.Queue[tuple[int, list[str]]] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    credited = 0

    async def caller(stub: account_pb2_grpc.AccountServiceStub) -> None:
        nonlocal credited
        while not queue.empty():
            uid, chunk = queue.get_nowait()
            reply = await stub.ForceCredit(account_pb2.ForceCreditRequest(uid=uid, tokens=chunk), timeout=30)
            credited += sum(1 for r in reply.results if r.outcome == account_pb2.CREDIT_OUTCOME_CREDITED)

    channels = [open_channel(target.address) for _ in range(min(4, callers))]
    try:
        stubs = [account_pb2_grpc.AccountServiceStub(ch) for ch in channels]
        started = time.perf_counter()
        await asyncio.gather(*(caller(stubs[i % len(stubs)]) for i in range(callers)))
        elapsed = time.perf_counter() - started
    finally:
        for ch in channels:
            await ch.close()
    if credited != count:
        raise SystemExit(f"force credit credited {credited} of {count}")
    print(f"force: {count} rewards in {len(calls)} calls of {per_call}, {callers} callers: "
          f"{elapsed:.2f} s", file=sys.stderr)
    return count / elapsed


async def bench_raw(dsn: str, count: int, uid_count: int, batch: int) -> tuple[float, float]:
    """Rows/s of a plain asyncpg batch insert (executemany, batches like the bulk path's)
    of the same credit rows into an unindexed scratch table, and of COPY for reference."""
    schema = f"bench_scratch_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        ddl = ("(entry_id BIGSERIAL PRIMARY KEY, uid BIGINT NOT NULL, kind TEXT NOT NULL,"
               " amount BIGINT NOT NULL, reward_id TEXT, source TEXT, balance_after BIGINT,"
               " created_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        await conn.execute(f"CREATE TABLE {schema}.raw_insert {ddl}")
        await conn.execute(f"CREATE TABLE {schema}.raw_copy {ddl}")
        tag = uuid.uuid4().hex[:8]
        rows = [(1000 + i % uid_count, "CREDIT", 1 + i % 888, f"raw-{tag}-{i}", "red_packet", i)
                for i in range(count)]
        sql = (f"INSERT INTO {schema}.raw_insert (uid, kind, amount, reward_id, source, balance_after)"
               " VALUES ($1, $2, $3, $4, $5, $6)")
        meter = CpuMeter([os.getpid(), int(await conn.fetchval("SELECT pg_backend_pid()"))])
        meter.start()
        started = time.perf_counter()
        for start in range(0, count, batch):
            await conn.executemany(sql, rows[start:start + batch])
        insert_s = time.perf_counter() - started
        meter.stop()
        started = time.perf_counter()
        for start in range(0, count, batch):
            await conn.copy_records_to_table(
                "raw_copy", schema_name=schema, records=rows[start:start + batch],
                columns=["uid", "kind", "amount", "reward_id", "source", "balance_after"])
        copy_s = time.perf_counter() - started
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
    print(f"raw: executemany {count} rows in {insert_s:.2f} s (CPU of client + backend "
          f"{meter.used * 1e6 / count:.1f} us per row); COPY in {copy_s:.2f} s", file=sys.stderr)
    return count / insert_s, count / copy_s


async def bench_sql_only(dsn: str, count: int, uid_count: int, batch: int, writers: int) -> float:
    """Credits/s of the bulk path's database statement alone: grants already verified, no
    stream, no service; `writers` connections each crediting its own uid partition, as the
    consumer does, into a scratch schema with the ledger's migrations. The ceiling for
    the bulk path if its Python cost were zero."""
    schema = f"bench_sqlonly_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(dsn, schema, min_size=writers, max_size=writers)
    try:
        await migrate(pool, schema, ROOT / "account_svc" / "migrations")
        base = random.randint(10**12, 9 * 10**12)
        now = int(time.time())
        grants = [RewardGrant(f"sql-{i}", base + i % uid_count, 1 + i % 888, "red_packet", now)
                  for i in range(count)]

        async def writer(part: int) -> None:
            mine = [g for g in grants if g.uid % writers == part]
            async with pool.acquire() as conn:
                repo = LedgerRepository(conn)
                for start in range(0, len(mine), batch // writers):
                    chunk = sorted(mine[start:start + batch // writers], key=lambda g: (g.uid, g.reward_id))
                    # The consumer's lanes' statement: a batch expected new, no look-up first.
                    await repo.credit(chunk, all_or_nothing=False, expect_fresh=True)

        started = time.perf_counter()
        await asyncio.gather(*(writer(p) for p in range(writers)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
    print(f"sql only: {count} credits in {elapsed:.2f} s over {writers} connections", file=sys.stderr)
    return count / elapsed


async def bench_consumers(client: redis.Redis, dsn: str, count: int, uid_count: int, rounds: int,
                          partitions: int) -> list[tuple[float, float]]:
    """Credits/s of 1 and of 2 consumer processes of our own (same prefix and schema, the
    same number of fresh rewards each time), per round. The order alternates (1 then 2,
    then 2 then 1) so that neither side always runs on a warmer database."""
    run = uuid.uuid4().hex[:8]
    target = Target("", f"bench-consumers-{run}", f"account_bench_c{run}")
    pool: asyncpg.Pool | None = None
    rates: list[tuple[float, float]] = []
    try:
        await add_consumer(target)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2,
                                         server_settings={"search_path": target.schema})
        await pgstate.prepare(dsn, [target.schema], say=lambda line: print(line, file=sys.stderr))
        for round_no in range(max(1, rounds)):
            measured: dict[int, float] = {}
            for consumers in ((1, 2) if round_no % 2 == 0 else (2, 1)):
                while len(target.processes) < consumers:
                    await add_consumer(target)
                while len(target.processes) > consumers:
                    await stop_process(target.processes.pop())
                measured[consumers] = await bench_bulk(
                    target, client, pool, count, uid_count, "", partitions,
                    f"{consumers} consumer process{'es' if consumers > 1 else ''}")
            rates.append((measured[1], measured[2]))
    finally:
        if pool is not None:
            await pool.close()
        await stop_service(target)
        await drop_own(target, client, dsn, partitions)
    return rates


async def main() -> None:
    # The benchmark's mesh is a private dev mesh: without SESSION_TOKEN_KEYS its services and
    # its simulated users share the well-known dev session key.
    os.environ.setdefault("MESH_ENV", "dev")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewards", type=int, default=50_000)
    parser.add_argument("--uids", type=int, default=5_000)
    parser.add_argument("--force-rewards", type=int, default=20_000)
    parser.add_argument("--force-callers", type=int, default=16)
    parser.add_argument("--force-per-call", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500, help="raw insert batch (the bulk path's batch)")
    parser.add_argument("--writers", type=int, default=2,
                        help="connections of the statement-only run (account_svc's ACCOUNT_CREDIT_WRITERS)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="bulk and raw runs alternate this many times; medians are reported, so a "
                             "burst of load from elsewhere on the machine skews one round, not the ratio")
    parser.add_argument("--consumer-rounds", type=int, default=3,
                        help="rounds of 1 vs 2 consumer processes (0 skips the comparison)")
    parser.add_argument("--profile", default="",
                        help="write py-spy collapsed stacks of the bulk phase here (own service only)")
    args = parser.parse_args()

    address = os.environ.get("ACCOUNT_SVC_ADDR") or "127.0.0.1:50051"
    dsn = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    partitions = partitions_from(os.environ)
    client = open_redis(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    try:
        target = await ensure_service(address, client, partitions)
    except BaseException:
        await client.aclose()
        raise
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2,
                                     server_settings={"search_path": target.schema})
    bulks: list[float] = []
    raws: list[tuple[float, float]] = []
    consumer_rates: list[tuple[float, float]] = []
    try:
        try:
            await pgstate.prepare(dsn, [target.schema], say=lambda line: print(line, file=sys.stderr))
            for round_no in range(max(1, args.rounds)):
                raws.append(await bench_raw(dsn, args.rewards, args.uids, args.batch))
                bulks.append(await bench_bulk(target, client, pool, args.rewards, args.uids,
                                              args.profile if round_no == 0 else "", partitions))
            raws.append(await bench_raw(dsn, args.rewards, args.uids, args.batch))
            sql_only = await bench_sql_only(dsn, args.rewards, args.uids, args.batch, args.writers)
            force = await bench_force(target, args.force_rewards, max(1, args.force_rewards // 10),
                                      args.force_callers, args.force_per_call)
        finally:
            await pool.close()
            own = target.own
            await stop_service(target)
            if own:
                await drop_own(target, client, dsn, partitions)
        # After the service above is gone: its consumer would not compete with these.
        if args.consumer_rounds > 0:
            consumer_rates = await bench_consumers(client, dsn, args.rewards, args.uids,
                                                   args.consumer_rounds, partitions)
    finally:
        await client.aclose()
    bulk = statistics.median(bulks)
    raw_insert = statistics.median(r[0] for r in raws)
    raw_copy = statistics.median(r[1] for r in raws)
    # Each bulk round against the raw runs just before and after it, so a burst of load
    # from elsewhere weighs on both sides of a ratio alike.
    ratios = [b / ((raws[i][0] + raws[i + 1][0]) / 2) for i, b in enumerate(bulks)]
    print(f"bulk rounds {[round(b) for b in bulks]} credits/s; raw executemany rounds "
          f"{[round(r[0]) for r in raws]} rows/s", file=sys.stderr)
    print(f"median: bulk {bulk:.0f} credits/s, raw executemany {raw_insert:.0f} rows/s, "
          f"COPY {raw_copy:.0f} rows/s (bulk/COPY {bulk / raw_copy:.2f})", file=sys.stderr)
    print(f"RESULT credit_bulk_per_s {bulk:.0f}")
    print(f"RESULT credit_force_per_s {force:.0f}")
    print(f"bulk/raw ratio per round {[round(r, 3) for r in ratios]}", file=sys.stderr)
    # The same statement with no Python in front of it: how far the bulk path could go.
    print(f"statement only (no tokens, no stream, no service): {sql_only:.0f} credits/s", file=sys.stderr)
    print(f"RESULT credit_sql_only_vs_raw_insert {sql_only / raw_insert:.2f}")
    if consumer_rates:
        print(f"consumer processes, credits/s per round: 1 -> {[round(r[0]) for r in consumer_rates]}, "
              f"2 -> {[round(r[1]) for r in consumer_rates]} (partitions {partitions}); this box has "
              f"{os.cpu_count()} cores, which 2 consumers share with PostgreSQL (the statement alone "
              f"above is the database's own ceiling)", file=sys.stderr)
        print(f"RESULT credit_2_vs_1_consumers "
              f"{statistics.median(two / one for one, two in consumer_rates):.2f}")
    print(f"RESULT credit_vs_raw_insert {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
