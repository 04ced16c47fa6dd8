"""`make status` reads autovacuum from the real server and warns exactly when it is off."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from meshkit.settings import DEFAULT_DATABASE_URL
from tools import devstack

URL = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


async def show(name: str) -> str:
    conn = await asyncpg.connect(URL)
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


# devstack is synchronous and runs its own event loop (asyncio.run): a thread of its own
# keeps that loop away from the test session's.


async def test_status_warns_exactly_when_the_server_does_not_autovacuum(
        capsys: pytest.CaptureFixture[str]) -> None:
    autovacuum = await show("autovacuum")
    await asyncio.to_thread(devstack.status)
    out = capsys.readouterr().out
    assert ("WARNING: autovacuum" in out) == (autovacuum == "off"), out


async def test_pg_settings_are_the_servers() -> None:
    expected = {name: await show(name) for name in ("autovacuum", "track_counts")}
    assert await asyncio.to_thread(devstack.pg_settings, URL) == expected
