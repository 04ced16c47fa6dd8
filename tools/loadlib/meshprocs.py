"""The processes a running mesh costs, grouped for CPU accounting (tools/loadlib/cpu.py):
the five services (meshctl's pidfiles), every process of the PostgreSQL server (the
postmaster and its children, told apart through pg_stat_activity) and the Redis server.

PostgreSQL and Redis may be shared with other work (tests of other sessions create their
own databases on the same server and their own key prefixes in the same Redis): backends
are attributed by database and by application_name, which every service pool sets to its
schema (meshkit.db.create_pool). Server-wide processes (checkpointer, WAL writer, ...) and
Redis cannot be split by client; they are counted whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from meshkit.redis_client import open_redis
from tools import meshctl
from tools.loadlib.cpu import PROC, children, cmdline, read_stat

# Each service's default schema (its settings.py), overridden by <SVC>_DB_SCHEMA.
DEFAULT_SCHEMAS = {
    "gateway_mock": "gateway",
    "account_svc": "account",
    "withdraw_svc": "withdraw",
    "payout_svc": "payout",
    "recon_svc": "recon",
}

PG_PREFIX = "postgres:"
PG_SERVER = "postgres:server"                # postmaster, checkpointer, WAL writer, ...
PG_UNATTRIBUTED = "postgres:unattributed"    # backends of the mesh's database, no service's name
PG_OTHER_DATABASES = "postgres:other-databases"
REDIS = "redis"
SELF = "load-generator"


def mesh_schemas(env: Mapping[str, str]) -> dict[str, str]:
    """service -> schema, as the services resolve it."""
    return {svc: env.get(f"{svc.upper()}_DB_SCHEMA") or schema for svc, schema in DEFAULT_SCHEMAS.items()}


def pg_group(service: str) -> str:
    return f"{PG_PREFIX}{service}"


@dataclass(frozen=True)
class Activity:
    pid: int
    database: str
    application: str
    backend_type: str
    leader_pid: int | None


def classify_pg(activity: Activity | None, *, database: str, by_application: Mapping[str, str],
                own_pids: frozenset[int]) -> str:
    """The group of one PostgreSQL process, from its pg_stat_activity row (None: not listed,
    e.g. forked a moment ago; the next sample classifies it)."""
    if activity is None:
        return PG_UNATTRIBUTED
    if activity.pid in own_pids:
        return SELF
    if activity.database and activity.database != database:
        return PG_OTHER_DATABASES
    if activity.backend_type != "client backend":
        # Background processes of the whole server (no database) or autovacuum on this one.
        return PG_SERVER if not activity.database else PG_UNATTRIBUTED
    service = by_application.get(activity.application)
    return pg_group(service) if service else PG_UNATTRIBUTED


@dataclass
class MeshProcesses:
    """Knows where to look; `discover()` returns pid -> group for a CpuWindow."""

    services: dict[str, int]
    database: str
    by_application: dict[str, str]
    monitor: asyncpg.Connection | None = None
    postmaster: int | None = None
    redis_pid: int | None = None
    # Processes started for the measurement (profilers, ...), reported apart.
    extra: dict[int, str] = field(default_factory=dict)
    proc: Path = PROC
    notes: list[str] = field(default_factory=list)
    own_backends: frozenset[int] = frozenset()

    @classmethod
    async def find(cls, env: Mapping[str, str], database_url: str, redis_url: str,
                   layout: meshctl.Layout | None = None, proc: Path = PROC) -> MeshProcesses:
        layout = layout or meshctl.Layout()
        services: dict[str, int] = {}
        for svc in meshctl.SERVICES:
            pid = meshctl.running_pid(svc, layout)
            if pid is not None:
                services[svc] = pid
        schemas = mesh_schemas(env)
        monitor = await asyncpg.connect(database_url, server_settings={"application_name": "cpu-monitor"})
        found = cls(services=services, database=str(await monitor.fetchval("SELECT current_database()")),
                    by_application={schema: svc for svc, schema in schemas.items()}, monitor=monitor,
                    proc=proc)
        own = int(await monitor.fetchval("SELECT pg_backend_pid()"))
        found.own_backends = frozenset({own})
        stat = read_stat(own, proc)
        if stat is not None and "postgres" in cmdline(stat.ppid, proc) + cmdline(own, proc):
            found.postmaster = stat.ppid
        else:
            found.notes.append("PostgreSQL is not a process of this host (or not visible in /proc): "
                               "its CPU is not measured")
        client = open_redis(redis_url)
        try:
            info = await client.info("server")
            pid = int(info.get("process_id", 0))
        finally:
            await client.aclose()
        if pid and "redis" in cmdline(pid, proc):
            found.redis_pid = pid
        else:
            found.notes.append("Redis is not a process of this host (or not visible in /proc): "
                               "its CPU is not measured")
        return found

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
            self.monitor = None

    async def activity(self) -> dict[int, Activity]:
        assert self.monitor is not None
        rows = await self.monitor.fetch(
            "SELECT pid, coalesce(datname, '') AS datname, coalesce(application_name, '') AS app,"
            " coalesce(backend_type, '') AS backend_type, leader_pid FROM pg_stat_activity")
        return {r["pid"]: Activity(r["pid"], r["datname"], r["app"], r["backend_type"], r["leader_pid"])
                for r in rows}

    async def discover(self) -> dict[int, str]:
        pids: dict[int, str] = {pid: svc for svc, pid in self.services.items()}
        pids[os.getpid()] = SELF
        pids.update(self.extra)
        if self.redis_pid is not None:
            pids[self.redis_pid] = REDIS
        if self.postmaster is not None:
            activity = await self.activity()
            pids[self.postmaster] = PG_SERVER
            for pid in children(self.postmaster, self.proc):
                row = activity.get(pid)
                # A parallel worker works for its leader's query.
                if row is not None and row.leader_pid and row.leader_pid != pid:
                    row = activity.get(row.leader_pid, row)
                pids[pid] = classify_pg(row, database=self.database, by_application=self.by_application,
                                        own_pids=self.own_backends)
        return pids
