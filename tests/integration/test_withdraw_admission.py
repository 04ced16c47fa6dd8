"""Overload against a real withdraw_svc with a tiny admission limit: the flood's excess is
refused fast with RESOURCE_EXHAUSTED and a retry-after hint, what is admitted succeeds, and
the payout workers' RPCs are never refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from mesh.withdraw.v1 import withdraw_pb2
from meshkit.status import reason_of
from tests.harness import user_metadata
from tests.integration.withdraw_support import WdMesh, start_mesh


@pytest.fixture(scope="module")
async def mesh(mesh_env: dict[str, str]) -> AsyncIterator[WdMesh]:
    m = await start_mesh(mesh_env, extra={
        "MESH_ADMISSION_ENABLED": "true",
        "MESH_ADMISSION_MAX_INFLIGHT": "2",
        "MESH_ADMISSION_QUEUE_MS": "20",
    })
    yield m
    await m.stop()


Outcome = tuple[str, float, grpc.aio.AioRpcError | None]


async def timed(call: Callable[[], Awaitable[Any]]) -> Outcome:
    started = time.perf_counter()
    try:
        await call()
    except grpc.aio.AioRpcError as err:
        return err.code().name, time.perf_counter() - started, err
    return "OK", time.perf_counter() - started, None


async def test_a_flood_is_shed_fast_with_a_retry_hint_and_payout_rpcs_are_never_refused(mesh: WdMesh) -> None:
    uid, method = await mesh.user(balance_fen=1_000_000)
    # Orders for the payout side to begin during the flood (created before it, one by one).
    orders = [(await mesh.confirm(uid, method, 100)).order.order_id for _ in range(10)]
    users = [await mesh.user(balance_fen=100_000) for _ in range(4)]
    sessions = [user_metadata(u) for u, _ in users]
    withdraw = mesh.withdraw()
    coordination = mesh.coordination()

    def page(i: int) -> Callable[[], Awaitable[Any]]:
        return lambda: withdraw.GetWithdrawPage(
            withdraw_pb2.GetWithdrawPageRequest(uid=users[i % 4][0]), timeout=5, metadata=sessions[i % 4])

    def confirm(i: int) -> Callable[[], Awaitable[Any]]:
        u, m = users[i % 4]
        return lambda: withdraw.ConfirmWithdraw(withdraw_pb2.ConfirmWithdrawRequest(
            uid=u, request_id=uuid.uuid4().hex, amount_fen=100, method_id=m), timeout=5,
            metadata=sessions[i % 4])

    def begin(order_id: str) -> Callable[[], Awaitable[Any]]:
        return lambda: coordination.BeginPayout(withdraw_pb2.BeginPayoutRequest(order_id=order_id), timeout=5)

    async def later(i: int, call: Callable[[], Awaitable[Any]]) -> Outcome:
        # An open-loop flood (1,000 calls/s for 0.2 s: several times what two slots serve
        # even now that a page view needs no gateway call; at 200/s a quiet box served
        # them all and nothing was shed): this sleep is the arrival schedule, not a wait
        # for anything. Arrivals spread out as users' would, so a refusal's latency is the
        # replica's, not one burst's through the loop this test shares with the services.
        await asyncio.sleep(i / 1000)
        return await timed(call)

    calls = [page(i) if i % 4 else confirm(i) for i in range(200)]
    flood = [later(i, call) for i, call in enumerate(calls)]
    internal = [later(i * 20, begin(o)) for i, o in enumerate(orders)]  # over the 0.2 s
    results = await asyncio.gather(*flood, *internal)
    user_results, internal_results = results[:len(flood)], results[len(flood):]

    codes = {code for code, _, _ in user_results}
    assert codes <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    shed = [(latency, err) for code, latency, err in user_results if code == "RESOURCE_EXHAUSTED"]
    admitted = [latency for code, latency, _ in user_results if code == "OK"]
    assert shed and admitted, (len(shed), len(admitted))
    for _, err in shed:
        assert err is not None
        trailers = dict(err.trailing_metadata() or ())
        hint = trailers.get("retry-after-ms")
        assert hint is not None and int(hint) > 0
        assert trailers.get("grpc-retry-pushback-ms") == hint
        assert err.details() == f"overloaded; retry after {hint} ms"
        assert reason_of(err) == "OVERLOADED"
    # Refusals are answered at once (under 10 ms from the replica's arrival), or, for a
    # waiter, after its budget (2 x 20 ms) plus whatever the loop adds. Client-side times
    # are not asserted: client, services and the flood share this test's event loop on a
    # shared box, so they are mostly loop lag.
    admission = mesh.withdraws[0].gate.admission if mesh.withdraws[0].gate else None
    assert admission is not None
    assert sum(admission.refused.values()) == len(shed), admission.refused
    assert admission.refused.get("queue full", 0) > 0, admission.refused
    for reason, slowest in admission.slowest_refusal_s.items():
        bound = 0.04 + 1.0 if reason == "waited too long" else 0.01
        assert slowest < bound, (reason, slowest)

    assert [code for code, _, _ in internal_results] == ["OK"] * len(orders)
    states = {o: await mesh.order_state(o) for o in orders}
    assert set(states.values()) == {"PAYING"}
