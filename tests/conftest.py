"""Session set-up shared by integration and e2e tests: a fresh database and Redis key
prefix for this run. PostgreSQL and Redis must be up (`make test` ensures they are)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from meshkit.redis_client import cluster_mode, open_redis
from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tests import tracing
from tests.harness import (
    SESSION_SECRET_1,
    SESSION_SECRET_2,
    create_database,
    database_env,
    drop_database,
    make_certs,
)

log = logging.getLogger(__name__)

# tests/cluster/ needs the Redis Cluster that `make test-cluster` starts (tools/redis_cluster.py),
# tests/pooler a PgBouncer in front (make test-pgbouncer and test-cluster set DATABASE_POOLER):
# each collected only there, neither run nor skipped anywhere else.
collect_ignore = ([] if cluster_mode() else ["cluster"]) + (
    [] if os.environ.get("DATABASE_POOLER") == "pgbouncer" else ["pooler"])


def pytest_configure(config: pytest.Config) -> None:
    # Before any service starts: one recording provider for the whole test process.
    tracing.install()


@pytest.fixture(scope="session")
async def mesh_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    """Environment for this run's services; also applied to os.environ. Mutual TLS with
    this run's own certificates: each service takes its own from MESH_CERTS_DIR."""
    base = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    database_url = await create_database(base)
    env = {
        **database_env(database_url),
        "REDIS_URL": redis_url,
        # A Redis Cluster behind REDIS_URL (make test-cluster): every client of the run,
        # in-process or a mesh process, opens it as one (meshkit.redis_client).
        "REDIS_CLUSTER": "1" if cluster_mode() else "0",
        "MESH_KEY_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
        # Development rules (meshkit.secrets): the harness's own keys, 32 bytes or more.
        "MESH_ENV": "dev",
        "REWARD_TOKEN_KEYS": "k1:test-secret-1-0123456789abcdef0123,k2:test-secret-2-0123456789abcdef0123",
        "REWARD_TOKEN_ACTIVE_KEY": "k1",
        # Session tokens of the user-facing RPCs (tests.harness.user_metadata signs with s1).
        "SESSION_TOKEN_KEYS": f"s1:{SESSION_SECRET_1},s2:{SESSION_SECRET_2}",
        "SESSION_TOKEN_ACTIVE_KEY": "s1",
        # Tests burst hundreds of calls at once to check correctness under concurrency, on a
        # shared box: shedding would refuse them. Admission is tested where it is switched
        # back on (tests/integration/test_withdraw_admission.py).
        "MESH_ADMISSION_ENABLED": "false",
        "MESH_CERTS_DIR": str(make_certs(str(tmp_path_factory.mktemp("certs"))).path),
        # Most tests set the gate or a rate in passing, to arrange what they test: the dev
        # opt-out lets them call SetGate / SetChannelRate directly. Four-eyes is on where it
        # is the subject (tests/integration/test_admin_four_eyes.py) and in the e2e mesh,
        # whose tools propose and approve as two operators. (MESH_ENV=dev above.)
        "ADMIN_FOUR_EYES": "false",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    log.warning("MESH_ENV=dev for this test run: development key rules (meshkit.secrets)")
    try:
        yield env
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        client = open_redis(redis_url)
        async for key in client.scan_iter(match=f"{env['MESH_KEY_PREFIX']}:*", count=1000):
            await client.delete(key)
        await client.aclose()
        await drop_database(base, database_url)


@pytest.fixture(scope="session")
async def redis_client(mesh_env: dict[str, str]) -> AsyncIterator[redis.Redis]:
    client = open_redis(mesh_env["REDIS_URL"])
    yield client
    await client.aclose()
