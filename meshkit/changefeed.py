"""Append to and read from a schema's change feed (table `changes`).

Ids come from a sequence, so a transaction that commits late can hold a smaller id than
rows already visible: reading by id alone would skip it. We order by the writing
transaction's id instead and only read rows of transactions older than every transaction
still running (pg_snapshot_xmin). Any row that becomes visible later belongs to a
transaction at or above that horizon, so a stored cursor never jumps over it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from meshkit import paging, validate

MAX_CURSOR_LEN = 64


@dataclass(frozen=True)
class Change:
    cursor: str
    kind: str
    key: str
    payload: dict[str, Any]
    created_at: datetime


async def append(conn: asyncpg.Connection, kind: str, key: str, payload: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO changes (kind, key, payload) VALUES ($1, $2, $3::jsonb)",
        kind, key, json.dumps(payload, default=str),
    )


async def append_many(conn: asyncpg.Connection, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    if rows:
        await conn.executemany(
            "INSERT INTO changes (kind, key, payload) VALUES ($1, $2, $3::jsonb)",
            [(kind, key, json.dumps(payload, default=str)) for kind, key, payload in rows],
        )


def parse_cursor(cursor: str) -> tuple[str, int]:
    """(xid8 as text, row id) of a cursor "<xid>:<id>"; InvalidArgument naming `cursor`
    for anything else, so no malformed or out-of-range value reaches the query."""
    if not cursor:
        return "0", 0
    if len(cursor) > MAX_CURSOR_LEN:
        raise validate.invalid("cursor", "malformed")
    xid, _, row_id = cursor.partition(":")
    return str(validate.decimal("cursor", xid, 0, validate.UINT64_MAX)), \
        validate.decimal("cursor", row_id, 0, validate.INT64_MAX)


# A feed source is any relation with the columns of `changes` (id, xid, kind, key, payload,
# created_at) and an index on (xid, id) under it: `changes` itself, or a service's own
# append-only log seen through a view (account_svc's entry_changes).
CHANGES = "changes"


async def read(
    pool: asyncpg.Pool, cursor: str, limit: int, source: str = CHANGES
) -> tuple[list[Change], str]:
    xid, row_id = parse_cursor(cursor)
    limit = paging.BULK_LIST.of(limit, field="limit")
    rows = await pool.fetch(
        f"""
        SELECT id, xid::text AS xid_text, kind, key, payload::text AS payload, created_at
        FROM {source} AS f
        WHERE (f.xid, f.id) > ($1::text::xid8, $2::bigint)
          AND f.xid < pg_snapshot_xmin(pg_current_snapshot())
        -- By the xid8 column, not its text: "100000" sorts before "99999" as text.
        ORDER BY f.xid, f.id
        LIMIT $3
        """,
        xid, row_id, limit,
    )
    changes = [
        Change(f"{r['xid_text']}:{r['id']}", r["kind"], r["key"], json.loads(r["payload"]), r["created_at"])
        for r in rows
    ]
    return changes, (changes[-1].cursor if changes else cursor)
