#!/usr/bin/env python3
"""Apply every service's migrations (shared changes table + its own) without starting it.

    python tools/migrate.py [<svc> ...]

Each service's schema comes from its own Settings (so <SVC>_DB_SCHEMA overrides apply)
and its migrations from <svc>/migrations/. Services also migrate at start; running this
twice is safe (applied migrations are recorded per schema, under an advisory lock).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

from meshkit.db import create_pool, migrate
from meshkit.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent

SERVICES = ("gateway_mock", "account_svc", "withdraw_svc", "payout_svc", "recon_svc")


def common_settings(service: str) -> CommonSettings:
    settings = importlib.import_module(f"{service}.settings").Settings.from_env()
    common: CommonSettings = settings.common
    return common


async def migrate_service(service: str) -> list[str]:
    common = common_settings(service)
    pool = await create_pool(common.database_url, common.db_schema, min_size=1, max_size=1)
    try:
        return await migrate(pool, common.db_schema, ROOT / service / "migrations")
    finally:
        await pool.close()


async def run(services: list[str]) -> int:
    for service in services:
        if service not in SERVICES:
            print(f"migrate: unknown service {service!r}; one of {', '.join(SERVICES)}", file=sys.stderr)
            return 2
        applied = await migrate_service(service)
        schema = common_settings(service).db_schema
        what = ", ".join(applied) if applied else "up to date"
        print(f"migrate: {service:<13} schema {schema:<9} {what}")
    return 0


def main() -> None:
    sys.exit(asyncio.run(run(sys.argv[1:] or list(SERVICES))))


if __name__ == "__main__":
    main()
