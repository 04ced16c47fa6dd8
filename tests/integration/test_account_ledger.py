"""account_svc debits, refunds, voids and queries against real PostgreSQL and Redis:
the concurrency guarantees are exercised with real concurrent RPCs, and the ledger
invariants are checked by reading the books after each scenario."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import asyncpg
import grpc
import pytest

from mesh.account.v1 import account_pb2 as pb
from mesh.account.v1 import account_pb2_grpc
from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from tests import harness
from tests.harness import new_id, new_uid, start_service, user_metadata
from tests.integration.ledger_invariants import assert_ledger_invariants, connect_ledger, fund

Stub: TypeAlias = account_pb2_grpc.AccountServiceStub


@pytest.fixture(scope="module")
async def server(mesh_env: dict[str, str]) -> AsyncIterator[Any]:
    saved = os.environ.get("ACCOUNT_SVC_ADDR")
    # The ledger alone: its own refund rules, without withdraw_svc to ask about orders.
    running = await start_service("account_svc", {"ACCOUNT_REFUND_CHECKS_ORDER": "false"})
    yield running
    await running.stop(1.0)
    if saved is None:
        os.environ.pop("ACCOUNT_SVC_ADDR", None)
    else:
        os.environ["ACCOUNT_SVC_ADDR"] = saved


@pytest.fixture(scope="module")
async def channel(server: Any) -> AsyncIterator[grpc.aio.Channel]:
    async with harness.channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def account(channel: grpc.aio.Channel) -> Stub:
    return account_pb2_grpc.AccountServiceStub(channel)


async def status_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def balance(account: Stub, uid: int) -> int:
    reply = await account.GetBalance(pb.GetBalanceRequest(uid=uid), metadata=user_metadata(uid))
    return int(reply.balance_fen)


async def order_kinds(account: Stub, order_id: str) -> list[int]:
    reply = await account.GetOrderEntries(pb.GetOrderEntriesRequest(order_id=order_id))
    return [e.kind for e in reply.entries]


async def test_200_concurrent_deducts_covering_100_never_overdraw(account: Stub) -> None:
    uid = new_uid()
    assert await fund(account, uid, 100 * 100) == 10_000
    orders = [new_id("o") for _ in range(200)]

    async def deduct(order_id: str) -> tuple[grpc.StatusCode, str]:
        return await status_of(account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=100)))

    outcomes = await asyncio.gather(*(deduct(o) for o in orders))
    codes = [code for code, _ in outcomes]
    assert codes.count(grpc.StatusCode.OK) == 100
    assert codes.count(grpc.StatusCode.FAILED_PRECONDITION) == 100
    assert all("insufficient balance" in msg for code, msg in outcomes if code != grpc.StatusCode.OK)
    assert await balance(account, uid) == 0
    # Refused orders left nothing behind.
    for order_id, (code, _) in zip(orders, outcomes, strict=True):
        assert len(await order_kinds(account, order_id)) == (1 if code == grpc.StatusCode.OK else 0)
    await assert_ledger_invariants([uid])


async def test_deduct_retried_concurrently_debits_once(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 1_000)
    order_id = new_id("o")
    request = pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=300)
    replies = await asyncio.gather(*(account.Deduct(request) for _ in range(20)))
    assert len({r.entry.entry_id for r in replies}) == 1
    assert sum(1 for r in replies if not r.replayed) == 1
    assert replies[0].entry.kind == pb.ENTRY_KIND_DEBIT and replies[0].entry.balance_after_fen == 700
    assert await order_kinds(account, order_id) == [pb.ENTRY_KIND_DEBIT]
    assert await balance(account, uid) == 700

    for changed in (pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=301),
                    pb.DeductRequest(order_id=order_id, uid=uid + 1, amount_fen=300)):
        code, message = await status_of(account.Deduct(changed))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert order_id in message and "already debited" in message
    assert await balance(account, uid) == 700
    await assert_ledger_invariants([uid])


async def test_insufficient_balance_is_refused_and_changes_nothing(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 50)
    order_id = new_id("o")
    code, message = await status_of(
        account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=51)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "balance 50 fen is less than 51 fen" in message
    assert await balance(account, uid) == 50
    assert await order_kinds(account, order_id) == []
    # The refused order id stays usable once the balance covers it.
    await fund(account, uid, 1)
    reply = await account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=51))
    assert not reply.replayed and reply.entry.balance_after_fen == 0

    stranger = new_uid()
    code, message = await status_of(
        account.Deduct(pb.DeductRequest(order_id=new_id("o"), uid=stranger, amount_fen=1)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "balance 0 fen" in message
    await assert_ledger_invariants([uid, stranger])


async def test_refund_once_per_debit_under_concurrency(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 500)
    order_id = new_id("o")
    debit = (await account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=200))).entry
    replies = await asyncio.gather(*(account.Refund(pb.RefundRequest(order_id=order_id)) for _ in range(20)))
    assert {r.outcome for r in replies} == {pb.REFUND_OUTCOME_REFUNDED}
    assert len({r.entry.entry_id for r in replies}) == 1
    assert sum(1 for r in replies if not r.replayed) == 1
    refund = replies[0].entry
    assert (refund.kind, refund.amount_fen, refund.uid, refund.balance_after_fen) == (
        pb.ENTRY_KIND_REFUND, 200, uid, 500)
    assert await balance(account, uid) == 500
    entries = (await account.GetOrderEntries(pb.GetOrderEntriesRequest(order_id=order_id))).entries
    assert [(e.kind, e.entry_id) for e in entries] == [
        (pb.ENTRY_KIND_DEBIT, debit.entry_id), (pb.ENTRY_KIND_REFUND, refund.entry_id)]
    # A refunded order id is still its first debit: a replayed Deduct gets it back.
    again = await account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=200))
    assert again.replayed and again.entry.entry_id == debit.entry_id
    assert await balance(account, uid) == 500
    await assert_ledger_invariants([uid])


async def test_refund_without_debit_voids_the_order(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 1_000)
    order_id = new_id("o")
    first = await account.Refund(pb.RefundRequest(order_id=order_id))
    assert first.outcome == pb.REFUND_OUTCOME_VOIDED and not first.replayed
    assert first.entry.kind == pb.ENTRY_KIND_VOID and first.entry.amount_fen == 0
    second = await account.Refund(pb.RefundRequest(order_id=order_id))
    assert second.outcome == pb.REFUND_OUTCOME_VOIDED and second.replayed
    assert second.entry.entry_id == first.entry.entry_id

    # The late debit of a voided order can never land.
    code, message = await status_of(
        account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=100)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "voided" in message
    assert await balance(account, uid) == 1_000
    assert await order_kinds(account, order_id) == [pb.ENTRY_KIND_VOID]
    await assert_ledger_invariants([uid])


async def test_deduct_racing_refund_never_leaves_a_debit_unrefunded(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 50 * 100)

    async def race(order_id: str) -> tuple[grpc.StatusCode, pb.RefundResponse]:
        deduct = status_of(account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=100)))
        refund = account.Refund(pb.RefundRequest(order_id=order_id))
        if random.random() < 0.5:
            refund_reply, (code, _) = await asyncio.gather(refund, deduct)
        else:
            (code, _), refund_reply = await asyncio.gather(deduct, refund)
        return code, refund_reply

    orders = [new_id("race") for _ in range(50)]
    results = await asyncio.gather(*(race(o) for o in orders))
    shapes = {"debit+refund": 0, "void": 0}
    for order_id, (code, refund_reply) in zip(orders, results, strict=True):
        kinds = await order_kinds(account, order_id)
        if kinds == [pb.ENTRY_KIND_DEBIT, pb.ENTRY_KIND_REFUND]:
            shapes["debit+refund"] += 1
            assert code == grpc.StatusCode.OK
            assert refund_reply.outcome == pb.REFUND_OUTCOME_REFUNDED
        else:
            assert kinds == [pb.ENTRY_KIND_VOID], f"order {order_id} ended with {kinds}"
            shapes["void"] += 1
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert refund_reply.outcome == pb.REFUND_OUTCOME_VOIDED
        # Whatever the order of arrival, a later Refund agrees with the first answer.
        replay = await account.Refund(pb.RefundRequest(order_id=order_id))
        assert replay.replayed and replay.outcome == refund_reply.outcome
    assert sum(shapes.values()) == 50
    assert await balance(account, uid) == 5_000
    await assert_ledger_invariants([uid])


CallFactory = Callable[[Stub], Awaitable[Any]]
_LONG = "o" * 65


def _deduct(order_id: str = "v-1", uid: int = 5, amount_fen: int = 1) -> CallFactory:
    return lambda s: s.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=amount_fen))


@pytest.mark.parametrize(("name", "call", "field"), [
    ("deduct empty order", _deduct(order_id=""), "order_id"),
    ("deduct long order", _deduct(order_id=_LONG), "order_id"),
    ("deduct spaced order", _deduct(order_id="a b"), "order_id"),
    ("deduct uid 0", _deduct(uid=0), "uid"),
    ("deduct uid < 0", _deduct(uid=-9), "uid"),
    ("deduct amount 0", _deduct(amount_fen=0), "amount_fen"),
    ("deduct amount < 0", _deduct(amount_fen=-100), "amount_fen"),
    ("refund empty order", lambda s: s.Refund(pb.RefundRequest(order_id="")), "order_id"),
    ("refund long order", lambda s: s.Refund(pb.RefundRequest(order_id=_LONG)), "order_id"),
    ("force uid 0", lambda s: s.ForceCredit(pb.ForceCreditRequest(uid=0, tokens=[])), "uid"),
    ("force too many", lambda s: s.ForceCredit(pb.ForceCreditRequest(uid=5, tokens=["x"] * 501)), "tokens"),
    ("force bad token", lambda s: s.ForceCredit(pb.ForceCreditRequest(uid=5, tokens=["x"])), "tokens[0]"),
    # The balance and the bill act for the session's uid: a uid of 0 is that one, any other
    # uid is PERMISSION_DENIED (tests/integration/test_sessions.py).
    ("list page_size", lambda s: s.ListEntries(pb.ListEntriesRequest(uid=5, page_size=-1),
                                               metadata=user_metadata(5)), "page_size"),
    ("list page_token", lambda s: s.ListEntries(pb.ListEntriesRequest(uid=5, page_token="zz"),
                                                metadata=user_metadata(5)), "page_token"),
    ("order entries empty", lambda s: s.GetOrderEntries(pb.GetOrderEntriesRequest(order_id="")), "order_id"),
    ("batch entries too many",
     lambda s: s.GetOrderEntriesBatch(pb.GetOrderEntriesBatchRequest(order_ids=["v-1"] * 1001)), "order_ids"),
    ("batch entries empty id",
     lambda s: s.GetOrderEntriesBatch(pb.GetOrderEntriesBatchRequest(order_ids=["v-1", ""])), "order_ids[1]"),
    ("batch entries long id",
     lambda s: s.GetOrderEntriesBatch(pb.GetOrderEntriesBatchRequest(order_ids=[_LONG])), "order_ids[0]"),
])
async def test_validation_failures_name_the_field_and_write_nothing(
    account: Stub, name: str, call: CallFactory, field: str
) -> None:
    conn = await connect_ledger()
    try:
        count = "SELECT (SELECT count(*) FROM entries) + (SELECT count(*) FROM changes)" \
                " + (SELECT count(*) FROM accounts)"
        before = await conn.fetchval(count)
        code, message = await status_of(call(account))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert message.startswith(field), f"{name}: {message!r} does not name {field}"
        # Nothing written (other writers of this database are idle between tests).
        assert await conn.fetchval(count) == before
        assert await conn.fetchval("SELECT count(*) FROM entries WHERE order_id = 'v-1'") == 0
    finally:
        await conn.close()


async def test_order_entries_batch_answers_every_order_id_once_in_request_order(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 1_000)
    debited, refunded, voided, unknown = (new_id("o") for _ in range(4))
    debit = (await account.Deduct(pb.DeductRequest(order_id=debited, uid=uid, amount_fen=100))).entry
    first = (await account.Deduct(pb.DeductRequest(order_id=refunded, uid=uid, amount_fen=200))).entry
    refund = (await account.Refund(pb.RefundRequest(order_id=refunded))).entry
    void = (await account.Refund(pb.RefundRequest(order_id=voided))).entry
    ids = [unknown, refunded, debited, voided, refunded]  # a repeat, and an order the ledger never saw
    reply = await account.GetOrderEntriesBatch(pb.GetOrderEntriesBatchRequest(order_ids=ids))
    assert [o.order_id for o in reply.orders] == [unknown, refunded, debited, voided]
    got = {o.order_id: [(e.kind, e.entry_id, e.amount_fen) for e in o.entries] for o in reply.orders}
    assert got == {
        unknown: [],
        refunded: [(pb.ENTRY_KIND_DEBIT, first.entry_id, 200), (pb.ENTRY_KIND_REFUND, refund.entry_id, 200)],
        debited: [(pb.ENTRY_KIND_DEBIT, debit.entry_id, 100)],
        voided: [(pb.ENTRY_KIND_VOID, void.entry_id, 0)],
    }
    # Each answer is what GetOrderEntries says for that order alone.
    for order_id in (refunded, voided):
        alone = await account.GetOrderEntries(pb.GetOrderEntriesRequest(order_id=order_id))
        assert [(e.kind, e.entry_id) for e in alone.entries] == [(k, i) for k, i, _ in got[order_id]]
    empty = await account.GetOrderEntriesBatch(pb.GetOrderEntriesBatchRequest())
    assert list(empty.orders) == []
    full = await account.GetOrderEntriesBatch(pb.GetOrderEntriesBatchRequest(
        order_ids=[debited] + [new_id("o") for _ in range(999)]))
    assert len(full.orders) == 1000 and [e.entry_id for e in full.orders[0].entries] == [debit.entry_id]


async def test_bill_pages_newest_first(account: Stub) -> None:
    uid = new_uid()
    for amount in (10, 20, 30, 40, 50):
        await fund(account, uid, amount)
    debit = await account.Deduct(pb.DeductRequest(order_id=new_id("o"), uid=uid, amount_fen=60))
    seen: list[pb.Entry] = []
    token = ""
    pages = 0
    while True:
        page = await account.ListEntries(pb.ListEntriesRequest(uid=uid, page_size=4, page_token=token),
                                         metadata=user_metadata(uid))
        pages += 1
        assert len(page.entries) <= 4
        seen.extend(page.entries)
        token = page.next_page_token
        if not token:
            break
    assert pages == 2
    assert [e.entry_id for e in seen] == sorted((e.entry_id for e in seen), reverse=True)
    assert [e.amount_fen for e in seen] == [60, 50, 40, 30, 20, 10]
    assert seen[0].entry_id == debit.entry.entry_id and seen[0].balance_after_fen == 90
    assert all(e.uid == uid for e in seen)
    default_page = await account.ListEntries(pb.ListEntriesRequest(uid=uid), metadata=user_metadata(uid))
    assert len(default_page.entries) == 6 and default_page.next_page_token == ""
    stranger = new_uid()
    assert (await account.ListEntries(pb.ListEntriesRequest(uid=stranger),
                                      metadata=user_metadata(stranger))).entries == []
    assert await balance(account, new_uid()) == 0
    assert await order_kinds(account, new_id("none")) == []
    await assert_ledger_invariants([uid])


async def test_entries_reach_the_change_feed(channel: grpc.aio.Channel, account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 1_000)
    order_id = new_id("o")
    debit = (await account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=250))).entry
    await account.Refund(pb.RefundRequest(order_id=order_id))
    feed = feed_pb2_grpc.ChangeFeedServiceStub(channel)
    found: list[dict[str, Any]] = []
    typed: list[feed_pb2.EntryRecord] = []
    cursor = ""
    deadline = time.monotonic() + 10
    while len(found) < 2 and time.monotonic() < deadline:
        page = await feed.ReadChanges(feed_pb2.ReadChangesRequest(cursor=cursor, limit=5000))
        mine = [c for c in page.changes if c.kind == "entry" and c.key == order_id]
        found += [json.loads(c.payload_json) for c in mine]
        typed += [c.entry for c in mine if c.WhichOneof("record") == "entry"]
        if page.next_cursor == cursor:
            await asyncio.sleep(0.05)
        cursor = page.next_cursor
    assert [(p["kind"], p["amount_fen"], p["uid"]) for p in found] == [
        ("DEBIT", 250, uid), ("REFUND", 250, uid)]
    assert found[0]["entry_id"] == debit.entry_id and found[0]["balance_after_fen"] == 750
    assert found[1]["balance_after_fen"] == 1_000 and found[1]["order_id"] == order_id
    # The typed records say the same as the deprecated JSON.
    assert [(e.kind, e.amount_fen, e.uid, e.balance_after_fen) for e in typed] == [
        (pb.ENTRY_KIND_DEBIT, 250, uid, 750), (pb.ENTRY_KIND_REFUND, 250, uid, 1_000)]
    assert typed[0].entry_id == debit.entry_id and typed[1].refund_of == debit.entry_id


async def test_the_schema_itself_refuses_what_the_code_must_never_do(account: Stub) -> None:
    """Bypass the service: the constraints alone keep the books right."""
    uid = new_uid()
    await fund(account, uid, 1_000)
    order_id = new_id("o")
    debit = (await account.Deduct(pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=100))).entry
    bill = await account.ListEntries(pb.ListEntriesRequest(uid=uid), metadata=user_metadata(uid))
    credit = bill.entries[-1]
    insert = "INSERT INTO entries (uid, kind, amount, order_id, reward_id, refund_of, balance_after) VALUES "
    attempts: dict[str, tuple[str, list[Any]]] = {
        "negative balance": ("UPDATE accounts SET balance = -1 WHERE uid = $1", [uid]),
        "second debit": (insert + "($1, 'DEBIT', 5, $2, NULL, NULL, 0)", [uid, order_id]),
        "void of a debited order": ("INSERT INTO entries (kind, amount, order_id) VALUES ('VOID', 0, $1)",
                                    [order_id]),
        "refund of another amount": (insert + "($1, 'REFUND', 999, $2, NULL, $3, 0)",
                                     [uid, order_id, debit.entry_id]),
        "credit replayed": (insert + "($1, 'CREDIT', 1000, NULL, $2, NULL, 0)", [uid, credit.reward_id]),
        "debit without order id": (insert + "($1, 'DEBIT', 5, NULL, NULL, NULL, 0)", [uid]),
        "zero amount debit": (insert + "($1, 'DEBIT', 0, $2, NULL, NULL, 0)", [uid, new_id("o")]),
        "edit an entry": ("UPDATE entries SET amount = 1 WHERE entry_id = $1", [debit.entry_id]),
        "delete an entry": ("DELETE FROM entries WHERE entry_id = $1", [debit.entry_id]),
    }
    refund = insert + "($1, 'REFUND', 100, $2, NULL, $3, 1000)"
    conn = await connect_ledger()
    try:
        for name, (sql, args) in attempts.items():
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(sql, *args)
                pytest.fail(f"{name} was accepted")
        # One refund per debit, inside a transaction this test then throws away.
        tx = conn.transaction()
        await tx.start()
        await conn.execute(refund, uid, order_id, debit.entry_id)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(refund, uid, order_id, debit.entry_id)
        await tx.rollback()
    finally:
        await conn.close()
    assert await balance(account, uid) == 900
    await assert_ledger_invariants([uid])
