"""account_svc DeductBatch against real PostgreSQL: each item keeps Deduct's rules and its
own result inside one call and one transaction, concurrent batches never overdraw or
deadlock, and the books add up after every scenario."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
import pytest

from mesh.account.v1 import account_pb2 as pb
from mesh.account.v1 import account_pb2_grpc
from tests import harness
from tests.harness import new_id, new_uid, start_service, user_metadata
from tests.integration.ledger_invariants import assert_ledger_invariants, connect_ledger, fund
from tests.waiting import eventually

Stub: TypeAlias = account_pb2_grpc.AccountServiceStub


@pytest.fixture(scope="module")
async def account(mesh_env: dict[str, str]) -> AsyncIterator[Stub]:
    saved = os.environ.get("ACCOUNT_SVC_ADDR")
    # The ledger alone: its own refund rules, without withdraw_svc to ask about orders.
    running = await start_service("account_svc", {"ACCOUNT_REFUND_CHECKS_ORDER": "false"})
    async with harness.channel(running.address) as channel:
        yield account_pb2_grpc.AccountServiceStub(channel)
    await running.stop(1.0)
    if saved is None:
        os.environ.pop("ACCOUNT_SVC_ADDR", None)
    else:
        os.environ["ACCOUNT_SVC_ADDR"] = saved


def item(order_id: str, uid: int, amount_fen: int) -> pb.DeductRequest:
    return pb.DeductRequest(order_id=order_id, uid=uid, amount_fen=amount_fen)


async def batch(account: Stub, items: list[pb.DeductRequest]) -> list[pb.DeductResult]:
    reply = await account.DeductBatch(pb.DeductBatchRequest(deducts=items), timeout=30)
    assert len(reply.results) == len(items)
    return list(reply.results)


async def balance(account: Stub, uid: int) -> int:
    reply = await account.GetBalance(pb.GetBalanceRequest(uid=uid), metadata=user_metadata(uid))
    return int(reply.balance_fen)


async def order_kinds(account: Stub, order_id: str) -> list[int]:
    reply = await account.GetOrderEntries(pb.GetOrderEntriesRequest(order_id=order_id))
    return [e.kind for e in reply.entries]


def error_of(result: pb.DeductResult) -> tuple[str, str, str]:
    assert result.WhichOneof("outcome") == "error", f"expected an error, got {result}"
    return result.error.code, result.error.reason, result.error.message


def debit_of(result: pb.DeductResult) -> pb.DeductResponse:
    assert result.WhichOneof("outcome") == "deducted", f"expected a debit, got {result}"
    return result.deducted


async def test_mixed_batch_gives_each_item_its_own_result(account: Stub) -> None:
    uid, stranger = new_uid(), new_uid()
    assert await fund(account, uid, 1_000) == 1_000
    replayed_order, reused_order, voided_order = new_id("old"), new_id("old"), new_id("void")
    first = (await account.Deduct(item(replayed_order, uid, 100))).entry
    reused = (await account.Deduct(item(reused_order, uid, 50))).entry
    void = await account.Refund(pb.RefundRequest(order_id=voided_order))
    assert void.outcome == pb.REFUND_OUTCOME_VOIDED
    assert await balance(account, uid) == 850
    new_a, short, new_b, bad = new_id("a"), new_id("short"), new_id("b"), new_id("bad")

    results = await batch(account, [
        item(new_a, uid, 300),             # 0: debited, 550 left
        item(short, uid, 600),             # 1: 550 does not cover 600
        item(new_b, uid, 200),             # 2: a smaller later item still fits: 350 left
        item(replayed_order, uid, 100),    # 3: replay of an earlier Deduct
        item(reused_order, uid, 51),       # 4: order id reused with another amount
        item(voided_order, uid, 100),      # 5: voided by a refund before any debit
        item(bad, uid, 0),                 # 6: invalid
        item(new_id("s"), stranger, 1),    # 7: no account at all
        item(new_a, uid, 300),             # 8: the same order twice in one batch
        item(new_b, uid + 1, 200),         # 9: ... and once more with another uid
    ])

    a = debit_of(results[0])
    assert not a.replayed and a.entry.kind == pb.ENTRY_KIND_DEBIT
    assert (a.entry.uid, a.entry.amount_fen, a.entry.order_id, a.entry.balance_after_fen) == (
        uid, 300, new_a, 550)
    code, reason, message = error_of(results[1])
    assert (code, reason) == ("FAILED_PRECONDITION", "INSUFFICIENT_BALANCE")
    assert "balance 550 fen is less than 600 fen" in message
    b = debit_of(results[2])
    assert not b.replayed and b.entry.balance_after_fen == 350 and b.entry.entry_id > a.entry.entry_id
    replay = debit_of(results[3])
    assert replay.replayed and replay.entry.entry_id == first.entry_id
    code, reason, message = error_of(results[4])
    assert (code, reason) == ("ALREADY_EXISTS", "ORDER_ID_REUSED")
    assert reused_order in message and "already debited" in message
    code, reason, message = error_of(results[5])
    assert (code, reason) == ("FAILED_PRECONDITION", "ORDER_VOIDED") and "voided" in message
    code, reason, message = error_of(results[6])
    assert (code, reason) == ("INVALID_ARGUMENT", "BAD_AMOUNT") and message.startswith("amount_fen")
    code, reason, message = error_of(results[7])
    assert reason == "INSUFFICIENT_BALANCE" and "balance 0 fen" in message
    twin = debit_of(results[8])
    assert twin.replayed and twin.entry.entry_id == a.entry.entry_id
    assert error_of(results[9])[1] == "ORDER_ID_REUSED"

    assert await balance(account, uid) == 350
    assert await order_kinds(account, new_a) == [pb.ENTRY_KIND_DEBIT]
    assert await order_kinds(account, short) == []
    assert await order_kinds(account, bad) == []
    assert await order_kinds(account, voided_order) == [pb.ENTRY_KIND_VOID]
    assert await order_kinds(account, reused_order) == [pb.ENTRY_KIND_DEBIT]
    assert reused.entry_id > 0
    # A refused item's order id stays usable, exactly as with Deduct.
    again = await batch(account, [item(short, uid, 350)])
    assert debit_of(again[0]).entry.balance_after_fen == 0
    # Replaying the whole batch changes nothing and answers every debit as replayed.
    replayed = await batch(account, [item(new_a, uid, 300), item(new_b, uid, 200)])
    assert [debit_of(r).replayed for r in replayed] == [True, True]
    assert await balance(account, uid) == 0
    await assert_ledger_invariants([uid, stranger])


async def test_200_deducts_in_concurrent_batches_covering_100_debit_exactly_100(account: Stub) -> None:
    # Four accounts each covering 25 orders; each batch mixes them in random order, so
    # concurrent batches lock the same rows and must queue in uid order, not deadlock.
    uids = [new_uid() for _ in range(4)]
    for uid in uids:
        assert await fund(account, uid, 25 * 100) == 2_500
    items = [item(new_id("c"), uid, 100) for uid in uids for _ in range(50)]
    random.shuffle(items)
    batches = [items[i:i + 10] for i in range(0, len(items), 10)]

    replies = await asyncio.gather(*(batch(account, b) for b in batches))

    by_uid: Counter[int] = Counter()
    refused = 0
    for sent, results in zip(batches, replies, strict=True):
        for request, result in zip(sent, results, strict=True):
            if result.WhichOneof("outcome") == "deducted":
                assert not result.deducted.replayed
                by_uid[request.uid] += 1
                assert await order_kinds(account, request.order_id) == [pb.ENTRY_KIND_DEBIT]
            else:
                assert error_of(result)[1] == "INSUFFICIENT_BALANCE"
                refused += 1
                assert await order_kinds(account, request.order_id) == []
    assert by_uid == {uid: 25 for uid in uids}
    assert refused == 100
    for uid in uids:
        assert await balance(account, uid) == 0
    await assert_ledger_invariants(uids)


async def test_concurrent_twins_of_a_batch_debit_each_order_once(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 10_000)
    items = [item(new_id("t"), uid, 100) for _ in range(10)]
    # The same batch 8 times at once, raced by single Deducts of the same orders.
    batch_calls = [batch(account, items) for _ in range(8)]
    single_calls = [account.Deduct(i) for i in items]
    replies: list[Any] = await asyncio.gather(*batch_calls, *single_calls)
    batch_replies, single_replies = replies[:8], replies[8:]

    for index, request in enumerate(items):
        entries = {debit_of(r[index]).entry.entry_id for r in batch_replies}
        entries.add(single_replies[index].entry.entry_id)
        assert len(entries) == 1, f"order {request.order_id} answered with debits {entries}"
        fresh = sum(1 for r in batch_replies if not r[index].deducted.replayed)
        fresh += 0 if single_replies[index].replayed else 1
        assert fresh == 1
        assert await order_kinds(account, request.order_id) == [pb.ENTRY_KIND_DEBIT]
    assert await balance(account, uid) == 10_000 - 10 * 100
    await assert_ledger_invariants([uid])


async def test_batch_racing_refunds_leaves_each_order_debited_and_refunded_or_voided(
    account: Stub
) -> None:
    uid = new_uid()
    await fund(account, uid, 30 * 100)
    orders = [new_id("r") for _ in range(30)]
    refunds = [account.Refund(pb.RefundRequest(order_id=o)) for o in orders]
    deducts = [batch(account, [item(o, uid, 100) for o in orders[i:i + 5]]) for i in range(0, 30, 5)]
    calls: list[Any] = [*refunds, *deducts]
    random.shuffle(calls)
    await asyncio.gather(*calls)
    # A Refund that found no debit voided the order; one that found a debit refunded it.
    for order_id in orders:
        kinds = await order_kinds(account, order_id)
        assert kinds in ([pb.ENTRY_KIND_VOID], [pb.ENTRY_KIND_DEBIT, pb.ENTRY_KIND_REFUND]), (
            f"order {order_id} ended with {kinds}")
    assert await balance(account, uid) == 3_000
    await assert_ledger_invariants([uid])


async def test_an_oversized_batch_is_refused_whole_and_writes_nothing(account: Stub) -> None:
    uid = new_uid()
    await fund(account, uid, 5_000)
    conn = await connect_ledger()
    try:
        before = await conn.fetchval("SELECT count(*) FROM entries WHERE uid = $1", uid)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await batch(account, [item(new_id("x"), uid, 1) for _ in range(1001)])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith("deducts")
        assert await conn.fetchval("SELECT count(*) FROM entries WHERE uid = $1", uid) == before
    finally:
        await conn.close()
    assert await batch(account, []) == []
    assert await balance(account, uid) == 5_000


async def _lock_waiters(conn: Any, count: int) -> bool:
    """Whether `count` backends (or more) of this run's database wait for a lock. The second
    one in a queue waits for the first, not for the holder, so count them all."""
    return bool(await conn.fetchval(
        "SELECT count(*) >= $1 FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'", count))


@pytest.mark.parametrize("twin", ["batch", "deduct"])
async def test_a_twin_that_commits_first_is_a_repeat_not_a_short_balance(account: Stub, twin: str) -> None:
    # Balance = exactly one order's amount. Both callers start while a third connection holds
    # the account row, so both statements take their snapshot before either debit commits;
    # then the row is released and one of them debits first. The batch statement that goes
    # second must see the twin's debit as the repeat it is, not the emptied balance as short.
    holder = await connect_ledger()
    watcher = await connect_ledger()
    try:
        for _round in range(8):
            uid, order_id = new_uid(), new_id("twin")
            await fund(account, uid, 100)
            tx = holder.transaction()
            await tx.start()
            released = False
            try:
                await holder.execute("SELECT 1 FROM accounts WHERE uid = $1 FOR UPDATE", uid)
                first = asyncio.ensure_future(batch(account, [item(order_id, uid, 100)]))
                second = asyncio.ensure_future(
                    batch(account, [item(order_id, uid, 100)]) if twin == "batch"
                    else account.Deduct(item(order_id, uid, 100), timeout=30))
                await eventually(lambda: _lock_waiters(watcher, 2), timeout=10,
                                 what="both deducts to wait for the account row")
                await tx.commit()
                released = True
                results: list[Any] = await asyncio.gather(first, second)
            finally:
                if not released:
                    await tx.rollback()
            answers = [debit_of(results[0][0])]
            answers.append(debit_of(results[1][0]) if twin == "batch" else results[1])
            assert {a.entry.entry_id for a in answers} == {answers[0].entry.entry_id}
            assert sorted(a.replayed for a in answers) == [False, True]
            assert await order_kinds(account, order_id) == [pb.ENTRY_KIND_DEBIT]
            assert await balance(account, uid) == 0
            await assert_ledger_invariants([uid])
    finally:
        await holder.close()
        await watcher.close()
