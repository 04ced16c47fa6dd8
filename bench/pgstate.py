"""PostgreSQL's state before a measurement, the same for every bench: say whether
autovacuum runs on the server, then VACUUM ANALYZE the tables measured.

A table's dead rows, visibility map and planner statistics depend on when autovacuum last
came by, and on this box it may be off altogether (see `make status`): then nothing ever
vacuums or analyzes, and a run measures whatever history earlier runs left behind. Vacuuming
first makes runs comparable; the setting is printed so a reader knows which world the
figures come from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import asyncpg


def quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def tables_of(conn: asyncpg.Connection, schemas: Iterable[str]) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])"
        " ORDER BY schemaname, tablename", list(schemas))
    return [(r["schemaname"], r["tablename"]) for r in rows]


async def prepare(dsn: str, schemas: Iterable[str], say: Callable[[str], None] = print) -> str:
    """Print autovacuum's setting and VACUUM ANALYZE every table of `schemas` in the database
    of `dsn` (schemas that do not exist are skipped). Returns the setting ("on"/"off")."""
    wanted = sorted(set(schemas))
    conn = await asyncpg.connect(dsn)
    try:
        autovacuum = str(await conn.fetchval("SHOW autovacuum"))
        track_counts = str(await conn.fetchval("SHOW track_counts"))
        database = await conn.fetchval("SELECT current_database()")
        say(f"postgres: autovacuum={autovacuum} track_counts={track_counts} (database {database})"
            + ("" if autovacuum == "on" else ": nothing vacuums or analyzes unless asked"))
        tables = await tables_of(conn, wanted)
        started = time.monotonic()
        for schema, table in tables:
            # One table per statement: VACUUM cannot run in a transaction block, and a table
            # dropped meanwhile (a scratch schema of another run) fails alone.
            try:
                await conn.execute(f"VACUUM (ANALYZE) {quoted(schema)}.{quoted(table)}")
            except asyncpg.UndefinedTableError:
                continue
        say(f"postgres: VACUUM ANALYZE of {len(tables)} tables in {', '.join(wanted)} took "
            f"{time.monotonic() - started:.1f}s")
    finally:
        await conn.close()
    return autovacuum
