"""The test oracle of the ledger: reads account_svc's schema directly (tests may; services
may not) and lists every way the books fail to add up. Any test that moves money through
account_svc can end with `await assert_ledger_invariants()`.

Checked, for every account (or only `uids`):
- stored balance == Σ credits − Σ debits + Σ refunds of its entries, and is >= 0;
- its entries, in entry id order, form an unbroken chain of balance_after values;
- the entries of each order id break none of the rules that hold for an order in any state
  (recon_svc.domain.ledger_findings, part of recon's definition of a clean order: at most
  one debit, no more refunds than debits, each refund of the debit's amount);
- every refund mirrors a debit (same uid, amount, order id), at most one per debit;
- no order id has both a debit and a void;
- every entry has exactly one "entry" row in the change feed.

Also helpers to sign reward tokens and fund an account through ForceCredit.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable

import asyncpg

from campaign.tokens import MAX_AMOUNT_FEN, RewardGrant, keyring_from_env, sign
from mesh.account.v1 import account_pb2, account_pb2_grpc
from meshkit.db import connect_schema
from meshkit.settings import DEFAULT_DATABASE_URL
from recon_svc.domain import EntryView, ledger_findings

SIGN = {"CREDIT": 1, "DEBIT": -1, "REFUND": 1, "VOID": 0}


async def connect_ledger() -> asyncpg.Connection:
    """A connection to the account schema of this test run's database."""
    schema = os.environ.get("ACCOUNT_SVC_DB_SCHEMA") or "account"
    return await connect_schema(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL), schema)


async def ledger_violations(uids: Iterable[int] | None = None) -> list[str]:
    wanted = sorted(set(uids)) if uids is not None else None
    conn = await connect_ledger()
    try:
        # One snapshot for every read, so a writer running meanwhile cannot fake a mismatch.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _violations(conn, wanted)
    finally:
        await conn.close()


async def _violations(conn: asyncpg.Connection, wanted: list[int] | None) -> list[str]:
    problems: list[str] = []
    uid_filter = "" if wanted is None else "WHERE uid = ANY($1::bigint[])"
    args: list[object] = [] if wanted is None else [wanted]

    balances = {r["uid"]: r["balance"] for r in await conn.fetch(
        f"SELECT uid, balance FROM accounts {uid_filter}", *args)}
    entries = await conn.fetch(
        "SELECT entry_id, uid, kind, amount, order_id, refund_of, balance_after FROM entries"
        " WHERE uid IS NOT NULL" + ("" if wanted is None else " AND uid = ANY($1::bigint[])")
        + " ORDER BY uid, entry_id",
        *args,
    )
    running: dict[int, int] = {}
    for e in entries:
        uid = e["uid"]
        running[uid] = running.get(uid, 0) + SIGN[e["kind"]] * e["amount"]
        if e["balance_after"] != running[uid]:
            problems.append(
                f"uid {uid}: entry {e['entry_id']} ({e['kind']} {e['amount']}) says balance_after "
                f"{e['balance_after']}, entries add up to {running[uid]}"
            )
        if running[uid] < 0:
            problems.append(f"uid {uid}: balance below zero ({running[uid]}) at entry {e['entry_id']}")
    for uid in sorted(set(balances) | set(running)):
        stored, summed = balances.get(uid, 0), running.get(uid, 0)
        if stored != summed:
            problems.append(f"uid {uid}: stored balance {stored} != credits - debits + refunds {summed}")
        if stored < 0:
            problems.append(f"uid {uid}: negative balance {stored}")

    by_order: dict[str, list[EntryView]] = defaultdict(list)
    for e in entries:
        if e["order_id"]:
            by_order[e["order_id"]].append(EntryView(e["kind"], e["amount"], e["entry_id"]))
    problems += [f"order {order_id}: {f.reason.value}: {f.detail}"
                 for order_id, order_entries in sorted(by_order.items())
                 for f in ledger_findings(order_entries)]

    by_id = {e["entry_id"]: e for e in entries}
    refunds_per_debit: dict[int, int] = {}
    for e in entries:
        if e["kind"] != "REFUND":
            continue
        debit = by_id.get(e["refund_of"])
        if debit is None or debit["kind"] != "DEBIT" or debit["uid"] != e["uid"] \
                or debit["amount"] != e["amount"] or debit["order_id"] != e["order_id"]:
            problems.append(f"refund {e['entry_id']} does not mirror a debit (refund_of {e['refund_of']})")
        refunds_per_debit[e["refund_of"]] = refunds_per_debit.get(e["refund_of"], 0) + 1
    problems += [f"debit {d} refunded {n} times" for d, n in refunds_per_debit.items() if n > 1]

    # A void records an order refused before any debit: it stands alone. (Voids carry no uid,
    # so they are read here, not with the account's entries above.)
    for r in await conn.fetch(
        "SELECT order_id, array_agg(kind ORDER BY entry_id) AS kinds FROM entries"
        " WHERE order_id IS NOT NULL GROUP BY order_id"
        " HAVING count(*) FILTER (WHERE kind = 'VOID') > 0 AND count(*) > 1"
    ):
        problems.append(f"order {r['order_id']} has entries {list(r['kinds'])}")

    # The feed is the entries themselves (migrations/002): each entry is in it once, with
    # the transaction id a reader orders by.
    feed = await conn.fetch("SELECT payload::text AS payload FROM entry_changes")
    feed_count: dict[int, int] = {}
    for row in feed:
        entry_id = int(json.loads(row["payload"])["entry_id"])
        feed_count[entry_id] = feed_count.get(entry_id, 0) + 1
    all_ids = [r["entry_id"] for r in await conn.fetch(
        "SELECT entry_id FROM entries" + ("" if wanted is None else
                                          " WHERE uid = ANY($1::bigint[])"), *args)]
    for entry_id in all_ids:
        if feed_count.get(entry_id, 0) != 1:
            problems.append(f"entry {entry_id} has {feed_count.get(entry_id, 0)} change-feed rows")
    return problems


async def assert_ledger_invariants(uids: Iterable[int] | None = None) -> None:
    problems = await ledger_violations(uids)
    assert not problems, "ledger invariants broken:\n" + "\n".join(problems[:50])


# --- helpers for tests that need money in an account ---------------------------------------


def reward_token(uid: int, amount_fen: int, *, reward_id: str = "", source: str = "red_packet",
                 issued_at: int = 0, key_id: str = "") -> str:
    """A token signed as the campaign signs it (keys from this run's environment)."""
    ring = keyring_from_env(os.environ)
    kid = key_id or ring.active
    grant = RewardGrant(reward_id or f"rw-{uuid.uuid4().hex}", uid, amount_fen, source,
                        issued_at or int(time.time()))
    return sign(grant, kid, ring.keys[kid])


async def fund(stub: account_pb2_grpc.AccountServiceStub, uid: int, amount_fen: int) -> int:
    """Credit `amount_fen` to `uid` through ForceCredit; returns the balance after."""
    tokens = []
    while amount_fen > 0:
        part = min(amount_fen, MAX_AMOUNT_FEN)
        tokens.append(reward_token(uid, part))
        amount_fen -= part
    reply = await stub.ForceCredit(account_pb2.ForceCreditRequest(uid=uid, tokens=tokens), timeout=10)
    return int(reply.balance_fen)
