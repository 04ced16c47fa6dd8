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
from urllib.parse import urlsplit

import asyncpg

from edge.client import bearer_metadata
from edge.sessions import issue, keys_from_env
from meshkit.db import with_database
from meshkit.server import RunningServer, start_server

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
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(base_url, name)


async def drop_database(base_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
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


async def start_service(name: str, env: dict[str, str] | None = None) -> RunningServer:
    """Start service `name` in-process on a free port, configured from os.environ plus env.
    Sets `<NAME>_ADDR` in os.environ so services started later find it."""
    module = importlib.import_module(f"{name}.server")
    with patched_env(env or {}):
        app, settings = module.build()
    running = await start_server(app, settings, port=0)
    os.environ[f"{name.upper()}_ADDR"] = running.address
    return running
