"""SQL of the ledger. Each money-moving write is one statement that changes the balance
and appends the entry together, so no crash or race can leave one without the other; the
constraints in migrations/ are the last word. The entries are the change feed too
(migrations/002), so a write needs nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg

from account_svc.domain import Entry, Kind, StoredCredit
from account_svc.ports import BatchDebit, Contention, CreditWrite, KeyTaken
from campaign.tokens import RewardGrant

# asyncpg connection or pool: both run a single statement.
Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


# The feed recon follows: the entries themselves, through a view (migrations/002).
ENTRY_FEED = "entry_changes"

_ENTRY_COLUMNS = (
    "entry_id, uid, kind, amount, reward_id, source, order_id, refund_of, balance_after, created_at"
)


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(
        entry_id=row["entry_id"],
        uid=row["uid"],
        kind=Kind(row["kind"]),
        amount_fen=row["amount"],
        reward_id=row["reward_id"],
        source=row["source"],
        order_id=row["order_id"],
        refund_of=row["refund_of"],
        balance_after_fen=row["balance_after"],
        created_at=row["created_at"],
    )


async def _run(db: Db, sql: str, *args: Any) -> list[asyncpg.Record]:
    try:
        return list(await db.fetch(sql, *args))
    except asyncpg.UniqueViolationError as exc:
        raise KeyTaken(exc.constraint_name or "") from exc
    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
        raise Contention(str(exc)) from exc


# --- credits ------------------------------------------------------------------------------

_CREDIT_SQL = f"""
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])
        WITH ORDINALITY AS b (reward_id, uid, amount, source, ord)
), seen AS (
    SELECT reward_id, uid, amount, source FROM entries
    WHERE kind = 'CREDIT' AND reward_id = ANY($1::text[])
), fresh AS (
    SELECT b.* FROM batch b
    WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.reward_id = b.reward_id)
      -- An all-or-nothing caller ($5) writes nothing once a reward id is reused with other content.
      AND NOT ($5::boolean AND EXISTS (
          SELECT 1 FROM seen s JOIN batch o ON o.reward_id = s.reward_id
          WHERE (s.uid, s.amount, s.source) IS DISTINCT FROM (o.uid, o.amount, o.source)))
), acct AS (
    -- One UPDATE per uid, rows locked in uid order: the order every writer uses, so
    -- concurrent batches and forced credits queue instead of deadlocking.
    INSERT INTO accounts AS a (uid, balance)
    SELECT uid, sum(amount) FROM fresh GROUP BY uid ORDER BY uid
    ON CONFLICT (uid) DO UPDATE SET balance = a.balance + EXCLUDED.balance, updated_at = now()
    RETURNING a.uid, a.balance
), ins AS (
    -- Each entry records the running balance it produced: the balance after the whole
    -- batch less the amounts of the uid's later entries in it. No ON CONFLICT: a reward
    -- credited concurrently since `seen` was read aborts the whole statement (balance
    -- included), and the caller runs it again.
    INSERT INTO entries (uid, kind, amount, reward_id, source, balance_after)
    SELECT f.uid, 'CREDIT', f.amount, f.reward_id, f.source,
           acct.balance - coalesce(sum(f.amount) OVER (
               PARTITION BY f.uid ORDER BY f.ord ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0)
    FROM fresh f JOIN acct ON acct.uid = f.uid
    ORDER BY f.ord
    RETURNING {_ENTRY_COLUMNS}
)
SELECT reward_id, uid, amount, source FROM seen
UNION ALL
SELECT NULL, uid, max(balance_after), NULL FROM ins GROUP BY uid
UNION ALL
-- The balance of uid $6 even when nothing was credited (a page load's replayed tokens).
SELECT NULL, uid, balance, NULL FROM accounts WHERE uid = $6 AND NOT EXISTS (SELECT 1 FROM ins)
"""


# The same credit for a batch expected to be all new (the bulk path): no look-up of stored
# credits before writing. The INSERT's unique index is the check: one reward id already
# credited aborts the whole statement (balances included) with a unique violation on
# entries_credit_reward, and the caller falls back to _CREDIT_SQL, which says which ones.
# It saves the look-up's index probes and the anti-join, about a tenth of the statement.
_CREDIT_FRESH_SQL = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[])
        WITH ORDINALITY AS b (reward_id, uid, amount, source, ord)
), acct AS (
    -- Rows locked in uid order, as in _CREDIT_SQL.
    INSERT INTO accounts AS a (uid, balance)
    SELECT uid, sum(amount) FROM batch GROUP BY uid ORDER BY uid
    ON CONFLICT (uid) DO UPDATE SET balance = a.balance + EXCLUDED.balance, updated_at = now()
    RETURNING a.uid, a.balance
), ins AS (
    INSERT INTO entries (uid, kind, amount, reward_id, source, balance_after)
    SELECT f.uid, 'CREDIT', f.amount, f.reward_id, f.source,
           acct.balance - coalesce(sum(f.amount) OVER (
               PARTITION BY f.uid ORDER BY f.ord ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0)
    FROM batch f JOIN acct ON acct.uid = f.uid
    ORDER BY f.ord
    RETURNING 1
)
-- No balances back: the bulk path has no caller to tell them to.
SELECT count(*) FROM ins
"""

# After the fresh statement found a stored credit, this many batches on the handle go
# straight to _CREDIT_SQL: a redelivered backlog (a consumer restarted before it could
# acknowledge) would otherwise pay for a failed statement per batch.
CAREFUL_AFTER_REPLAY = 16


# --- debits, voids, refunds ---------------------------------------------------------------

_DEBIT_SQL = f"""
WITH upd AS (
    -- The balance check and the debit are one conditional UPDATE: no read-then-write.
    UPDATE accounts SET balance = balance - $3, updated_at = now()
    WHERE uid = $2 AND balance >= $3
    RETURNING uid, balance
), ins AS (
    INSERT INTO entries (uid, kind, amount, order_id, balance_after)
    SELECT uid, 'DEBIT', $3, $1, balance FROM upd
    RETURNING {_ENTRY_COLUMNS}
)
SELECT {_ENTRY_COLUMNS} FROM ins
"""


# Many debits in one statement (one round trip, one commit). Per account, the items are
# taken in request order, each debited when what is left covers it: exactly what the same
# Deducts run one after another would do, with the balance check made against the locked
# row, never a stale read. The order ids must be distinct (the caller splits repeats off).
_DEBIT_BATCH_SQL = f"""
WITH RECURSIVE batch AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
        WITH ORDINALITY AS b (order_id, uid, amount, ord)
), prior AS (
    -- Debits and voids committed before this statement: those items are repeats. One
    -- committed since makes the INSERT below fail on the unique index, undoing it all;
    -- or, when the twin's debit left too little for the item, the item comes out SHORT
    -- and debit_batch looks again.
    SELECT {_ENTRY_COLUMNS} FROM entries
    WHERE kind IN ('DEBIT', 'VOID') AND order_id = ANY($1::text[])
), cand AS (
    SELECT b.*, row_number() OVER (PARTITION BY b.uid ORDER BY b.ord) AS rn FROM batch b
    WHERE NOT EXISTS (SELECT 1 FROM prior p WHERE p.order_id = b.order_id)
), acct AS (
    -- Rows locked in uid order, the order every writer uses: batches queue, never deadlock.
    -- FOR UPDATE reads the latest committed balance, whatever the statement's snapshot.
    SELECT uid, balance FROM accounts WHERE uid IN (SELECT uid FROM cand) ORDER BY uid FOR UPDATE
), walk (uid, rn, amount, left_before, left_after) AS (
    SELECT u.uid, 0::bigint, 0::bigint, coalesce(a.balance, 0), coalesce(a.balance, 0)
    FROM (SELECT DISTINCT uid FROM cand) u LEFT JOIN acct a ON a.uid = u.uid
    UNION ALL
    SELECT w.uid, c.rn, c.amount, w.left_after,
           CASE WHEN c.amount <= w.left_after THEN w.left_after - c.amount ELSE w.left_after END
    FROM walk w JOIN cand c ON c.uid = w.uid AND c.rn = w.rn + 1
), plan AS (
    SELECT c.order_id, c.uid, c.amount, c.rn, w.left_before, w.left_after,
           c.amount <= w.left_before AS covered
    FROM cand c JOIN walk w ON w.uid = c.uid AND w.rn = c.rn
), ins AS (
    INSERT INTO entries (uid, kind, amount, order_id, balance_after)
    SELECT uid, 'DEBIT', amount, order_id, left_after FROM plan WHERE covered ORDER BY uid, rn
    RETURNING {_ENTRY_COLUMNS}
), upd AS (
    -- The CHECK (balance >= 0) still stands behind this.
    UPDATE accounts a SET balance = a.balance - d.total, updated_at = now()
    FROM (SELECT uid, sum(amount) AS total FROM ins GROUP BY uid) d
    WHERE a.uid = d.uid
    RETURNING a.uid
)
SELECT 'DEBITED' AS tag, {_ENTRY_COLUMNS}, NULL::bigint AS short_of FROM ins
UNION ALL
SELECT 'TAKEN', {_ENTRY_COLUMNS}, NULL FROM prior
UNION ALL
SELECT 'SHORT', NULL, uid, NULL, amount, NULL, NULL, order_id, NULL, NULL, NULL, left_before
FROM plan WHERE NOT covered
"""


_VOID_SQL = f"""
WITH ins AS (
    INSERT INTO entries (kind, amount, order_id) VALUES ('VOID', 0, $1)
    ON CONFLICT (order_id) WHERE kind IN ('DEBIT', 'VOID') DO NOTHING
    RETURNING {_ENTRY_COLUMNS}
)
SELECT {_ENTRY_COLUMNS} FROM ins
"""


_REFUND_SQL = f"""
WITH upd AS (
    UPDATE accounts SET balance = balance + $3, updated_at = now() WHERE uid = $2
    RETURNING uid, balance
), ins AS (
    INSERT INTO entries (uid, kind, amount, order_id, refund_of, balance_after)
    SELECT uid, 'REFUND', $3, $1, $4, balance FROM upd
    RETURNING {_ENTRY_COLUMNS}
)
SELECT {_ENTRY_COLUMNS} FROM ins
"""


class LedgerRepository:
    """The ledger's SQL on one handle (account_svc.ports.LedgerStatements): the pool (each
    call one autocommit statement) or a connection (the caller's transaction)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        # Batches left to credit with the look-up first (CAREFUL_AFTER_REPLAY).
        self._careful = 0

    async def credit(self, grants: Sequence[RewardGrant], *, all_or_nothing: bool,
                     balance_of: int = 0, expect_fresh: bool = False) -> CreditWrite:
        """Credit `grants` (one per reward id, ordered by uid then reward id) not credited yet,
        in one statement. Returns the credits already stored for these reward ids (as seen
        before writing) and the balance after of each credited uid, and of `balance_of`
        (when it has an account). With all_or_nothing, writes nothing if a stored credit
        differs from its grant. Raises KeyTaken when one of the reward ids was credited
        concurrently; then nothing is written.

        expect_fresh (the bulk path; the handle must not be inside a transaction, which a
        failed statement would abort): first try _CREDIT_FRESH_SQL, which skips the look-up
        and fails whole if any reward id is stored, then the statement with the look-up.
        When the first one succeeds, no balances are returned (nobody asked for them)."""
        if expect_fresh and not all_or_nothing and not balance_of:
            if self._careful > 0:
                self._careful -= 1
            else:
                try:
                    await _run(self.db, _CREDIT_FRESH_SQL,
                               [g.reward_id for g in grants], [g.uid for g in grants],
                               [g.amount_fen for g in grants], [g.source for g in grants])
                except KeyTaken as exc:
                    if exc.constraint != "entries_credit_reward":
                        raise
                    # Some reward id is credited already (a redelivery, or a forced credit
                    # first): nothing was written; the look-up below tells which.
                    self._careful = CAREFUL_AFTER_REPLAY
                else:
                    return CreditWrite({}, {})
        rows = await _run(
            self.db, _CREDIT_SQL,
            [g.reward_id for g in grants],
            [g.uid for g in grants],
            [g.amount_fen for g in grants],
            [g.source for g in grants],
            all_or_nothing,
            balance_of,
        )
        stored: dict[str, StoredCredit] = {}
        balances: dict[int, int] = {}
        for r in rows:
            if r["reward_id"] is None:
                balances[r["uid"]] = r["amount"]
            else:
                stored[r["reward_id"]] = StoredCredit(r["reward_id"], r["uid"], r["amount"],
                                                      r["source"] or "")
        return CreditWrite(stored, balances)

    async def debit(self, order_id: str, uid: int, amount_fen: int) -> Entry | None:
        """The new debit, or None when the balance does not cover it. Raises KeyTaken when the
        order id already has a debit or a void (the whole statement is then undone)."""
        rows = await _run(self.db, _DEBIT_SQL, order_id, uid, amount_fen)
        return _entry(rows[0]) if rows else None

    async def debit_batch(self, items: Sequence[tuple[str, int, int]]) -> dict[str, BatchDebit]:
        """Debit (order_id, uid, amount_fen) items with distinct order ids in one statement.
        Returns, per order id, its new debit, the debit or void it already had (committed
        before this call returned), or that the balance fell short. Raises KeyTaken when one
        of the order ids got a debit or void concurrently (then nothing is written),
        Contention on deadlock. The handle runs under READ COMMITTED (each statement its own
        snapshot), as the pool does."""
        rows = await _run(
            self.db, _DEBIT_BATCH_SQL,
            [i[0] for i in items], [i[1] for i in items], [i[2] for i in items],
        )
        out: dict[str, BatchDebit] = {}
        for r in rows:
            tag = r["tag"]
            if tag == "SHORT":
                out[r["order_id"]] = BatchDebit(r["order_id"], None, False, int(r["short_of"]))
            else:
                out[r["order_id"]] = BatchDebit(r["order_id"], _entry(r), tag == "DEBITED")
        short = [order_id for order_id, d in out.items() if d.entry is None]
        if short:
            # `prior` reads the statement's snapshot, but FOR UPDATE reads the latest balance:
            # a twin of the order (a concurrent Deduct or batch) that committed in between is
            # missing from the one and already taken out of the other, so its order looks
            # short. A new statement (a new snapshot under READ COMMITTED) sees the twin's
            # debit; such an item is the repeat it is. Any twin that debits the row first has
            # committed before this statement could lock it, so this look sees every one.
            for entry in await self.debits_or_voids(short):
                assert entry.order_id is not None
                out[entry.order_id] = BatchDebit(entry.order_id, entry, False)
        return out

    async def debits_or_voids(self, order_ids: Sequence[str]) -> list[Entry]:
        rows = await self.db.fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM entries "
            "WHERE kind IN ('DEBIT', 'VOID') AND order_id = ANY($1::text[])",
            list(order_ids),
        )
        return [_entry(r) for r in rows]

    async def debit_or_void(self, order_id: str) -> Entry | None:
        row = await self.db.fetchrow(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE order_id = $1 AND kind IN ('DEBIT', 'VOID')",
            order_id,
        )
        return _entry(row) if row else None

    async def insert_void(self, order_id: str) -> Entry | None:
        """The new void, or None when a debit or void of the order id is already committed
        (the unique index decides the debit/void race, not Python)."""
        rows = await _run(self.db, _VOID_SQL, order_id)
        return _entry(rows[0]) if rows else None

    async def lock_account(self, uid: int) -> int | None:
        value = await self.db.fetchval("SELECT balance FROM accounts WHERE uid = $1 FOR UPDATE", uid)
        return int(value) if value is not None else None

    async def refund_of(self, debit_id: int) -> Entry | None:
        row = await self.db.fetchrow(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE kind = 'REFUND' AND refund_of = $1", debit_id
        )
        return _entry(row) if row else None

    async def insert_refund(self, debit: Entry) -> Entry:
        assert debit.kind is Kind.DEBIT and debit.order_id and debit.uid is not None
        rows = await _run(self.db, _REFUND_SQL, debit.order_id, debit.uid, debit.amount_fen, debit.entry_id)
        if not rows:
            raise RuntimeError(f"account of debit {debit.entry_id} is missing")
        return _entry(rows[0])

    async def balance(self, uid: int) -> int:
        value = await self.db.fetchval("SELECT balance FROM accounts WHERE uid = $1", uid)
        return int(value) if value is not None else 0

    async def list_entries(self, uid: int, below_entry_id: int, limit: int) -> list[Entry]:
        rows = await self.db.fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE uid = $1 AND entry_id < $2"
            " ORDER BY entry_id DESC LIMIT $3",
            uid, below_entry_id, limit,
        )
        return [_entry(r) for r in rows]

    async def order_entries(self, order_id: str) -> list[Entry]:
        # Two arms so each uses its partial unique index.
        rows = await self.db.fetch(
            f"""
            SELECT {_ENTRY_COLUMNS} FROM entries WHERE order_id = $1 AND kind IN ('DEBIT', 'VOID')
            UNION ALL
            SELECT {_ENTRY_COLUMNS} FROM entries WHERE order_id = $1 AND kind = 'REFUND'
            ORDER BY entry_id
            """,
            order_id,
        )
        return [_entry(r) for r in rows]

    async def orders_entries(self, order_ids: Sequence[str]) -> list[Entry]:
        """The entries of many orders in one statement, by entry id. Each arm reads its partial
        unique index, whose uniqueness the planner knows without statistics."""
        rows = await self.db.fetch(
            f"""
            SELECT {_ENTRY_COLUMNS} FROM entries
            WHERE order_id = ANY($1::text[]) AND kind IN ('DEBIT', 'VOID')
            UNION ALL
            SELECT {_ENTRY_COLUMNS} FROM entries WHERE order_id = ANY($1::text[]) AND kind = 'REFUND'
            ORDER BY entry_id
            """,
            list(order_ids),
        )
        return [_entry(r) for r in rows]


class PgLedgerStore:
    """The ledger's PostgreSQL (account_svc.ports.LedgerStore)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._statements = LedgerRepository(pool)

    @property
    def statements(self) -> LedgerRepository:
        return self._statements

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[LedgerRepository]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield LedgerRepository(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[LedgerRepository]:
        """A connection held while the caller runs: a pooled statement costs a second round
        trip (the pool resets the connection on release), a held one does not."""
        async with self.pool.acquire() as conn:
            yield LedgerRepository(conn)
