"""On the real PostgreSQL and Redis: the bench's CPU accounting finds the server processes
and charges a backend's work to the service whose pool (application_name = its schema)
opened it, and its own monitoring backend to itself."""

from __future__ import annotations

import os
import uuid

import asyncpg

from tools.loadlib.cpu import CpuWindow, read_stat
from tools.loadlib.meshprocs import PG_SERVER, REDIS, SELF, MeshProcesses, pg_group


async def test_backend_cpu_goes_to_the_service_of_its_pool(mesh_env: dict[str, str]) -> None:
    schema = f"cpu_{uuid.uuid4().hex[:8]}"
    env = {**mesh_env, "WITHDRAW_SVC_DB_SCHEMA": schema}
    procs = await MeshProcesses.find(env, mesh_env["DATABASE_URL"], mesh_env["REDIS_URL"])
    try:
        # make test's PostgreSQL (the machine's or devstack's private one) runs on this host.
        assert procs.postmaster is not None, "PostgreSQL's postmaster not found among this host's processes"
        conn = await asyncpg.connect(mesh_env["DATABASE_URL"], server_settings={"application_name": schema})
        try:
            backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
            found = await procs.discover()
            assert found[backend] == pg_group("withdraw_svc")
            assert found[procs.postmaster] == PG_SERVER
            assert found[os.getpid()] == SELF
            assert all(found[pid] == SELF for pid in procs.own_backends)
            assert procs.redis_pid is not None and found[procs.redis_pid] == REDIS
            stat = read_stat(backend)
            assert stat is not None and stat.ppid == procs.postmaster

            window = CpuWindow()
            window.start(found)
            # Work that only this backend does: a few hundred ms of CPU.
            await conn.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
            window.stop(await procs.discover())
        finally:
            await conn.close()
        assert window.by_group()[pg_group("withdraw_svc")] >= 0.05
    finally:
        await procs.close()
