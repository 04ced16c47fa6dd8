"""Test harness: a fresh database and Redis key namespace per test run, and in-process
services on free ports, each built exactly as `python -m <svc>` builds it."""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from edge.client import bearer_metadata
from edge.sessions import issue, keys_from_env
from meshkit import db
from meshkit.db import with_database
from meshkit.dialer import Dialer, RoutedChannel
from meshkit.pki import CertDir
from meshkit.server import App, RunningServer, start_server
from meshkit.settings import CommonSettings, TlsSettings
from tools import certs as certs_tool

SERVICES = ["gateway_mock", "account_svc", "withdraw_svc", "payout_svc", "recon_svc"]


def unlimited_rates(channels: str) -> str:
    """PAYOUT_DEFAULT_RATES for channels ("a,b") that tests pay through without a limit:
    said explicitly, since a channel without a rate is paused."""
    return ",".join(f"{channel}:unlimited" for channel in channels.split(",") if channel)


def new_uid() -> int:
    """A uid no other test of this run uses."""
    return random.randint(10**9, 10**15)


# The session keys of every test run (tests/conftest.py::mesh_env), 32+ bytes each.
SESSION_SECRET_1 = "test-session-secret-one-0123456789abcdef"
SESSION_SECRET_2 = "test-session-secret-two-0123456789abcdef"


def session_token(uid: int) -> str:
    """A fresh session token of `uid`, signed as the app edge would with this run's keys."""
    return issue(keys_from_env(os.environ), uid, now=time.time())


def user_metadata(uid: int) -> tuple[tuple[str, str], ...]:
    """Call metadata of user `uid`, signed in: what the app sends with user-facing RPCs."""
    return bearer_metadata(session_token(uid))


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def create_database(base_url: str) -> str:
    name = f"mesh_test_{uuid.uuid4().hex[:12]}"
    conn = await db.connect(base_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(base_url, name)


def database_env(database_url: str) -> dict[str, str]:
    """DATABASE_URL of a scratch database, and DATABASE_DIRECT_URL to the same database when
    the run goes through a pooler (make test-pgbouncer sets it for the base database)."""
    env = {"DATABASE_URL": database_url}
    if direct := os.environ.get("DATABASE_DIRECT_URL"):
        env["DATABASE_DIRECT_URL"] = with_database(direct, urlsplit(database_url).path.lstrip("/"))
    return env


async def drop_database(base_url: str, url: str) -> None:
    """Drop the scratch database and the per-schema roles made for it (meshkit.db.schema_dsn)."""
    name = urlsplit(url).path.lstrip("/")
    conn = await db.connect(base_url)
    try:
        roles = await db.schema_roles_of(conn, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await db.drop_roles(conn, roles)
    finally:
        await conn.close()


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def make_certs(directory: str) -> CertDir:
    """This run's CA and every identity's certificate (tools/certs.py, as `make certs`)."""
    certs = CertDir(Path(directory))
    certs_tool.ensure(certs)
    return certs


# Admin listener of each in-process server by its main address, for channel().
_ADMIN_OF: dict[str, str] = {}


async def start_built(app: App, settings: CommonSettings, port: int = 0,
                      admin_port: int | None = None) -> RunningServer:
    """start_server on free ports (or those given), remembering where its admin services are."""
    running = await start_server(app, settings, port=port, admin_port=admin_port)
    if running.admin_address is not None:
        _ADMIN_OF[running.address] = running.admin_address
    return running


def channel(target: RunningServer | str, identity: str | None = None) -> RoutedChannel:
    """A channel to an in-process server (or an address) as tools make them: mutual TLS
    with this run's certificates, each method under an identity the policy allows for it
    (or `identity`, to be refused), admin services on the admin port."""
    address = target if isinstance(target, str) else target.address
    admin = target.admin_address if isinstance(target, RunningServer) else _ADMIN_OF.get(address)
    return Dialer.from_env().routed(address, admin, identity)


def tls_as(identity: str) -> TlsSettings:
    """Server (or client) TLS settings of `identity` from this run's certificates, for the
    stand-in servers tests start in place of a service."""
    return Dialer.from_env().tls_for(identity)


async def start_service(name: str, env: dict[str, str] | None = None) -> RunningServer:
    """Start service `name` in-process on a free port, configured from os.environ plus env.
    Sets `<NAME>_ADDR` (and `<NAME>_ADMIN_ADDR`) in os.environ so services started later
    find it."""
    module = importlib.import_module(f"{name}.server")
    with patched_env(env or {}):
        app, settings = module.build()
    running = await start_built(app, settings)
    os.environ[f"{name.upper()}_ADDR"] = running.address
    if running.admin_address is not None:
        os.environ[f"{name.upper()}_ADMIN_ADDR"] = running.admin_address
    return running
