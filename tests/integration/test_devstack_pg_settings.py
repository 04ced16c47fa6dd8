"""`make status` reads autovacuum from the real server and warns exactly when it is off."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from meshkit.settings import DEFAULT_DATABASE_URL
from tools import devstack


async def show(url: str, name: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


def test_status_warns_exactly_when_the_server_does_not_autovacuum(capsys: pytest.CaptureFixture[str]) -> None:
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    autovacuum = asyncio.run(show(url, "autovacuum"))
    devstack.status()
    out = capsys.readouterr().out
    assert ("WARNING: autovacuum" in out) == (autovacuum == "off"), out


def test_pg_settings_are_the_servers() -> None:
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    expected = {name: asyncio.run(show(url, name)) for name in ("autovacuum", "track_counts")}
    assert devstack.pg_settings(url) == expected
