"""Admission logic with a fake clock: who runs, who waits, who is refused, in what order."""

from __future__ import annotations

import asyncio

import pytest

from meshkit.admission import (
    CONFIRM,
    QUERY,
    VIEW,
    Admission,
    AdmissionSettings,
    Gate,
    Refused,
    method_key,
    parse_priorities,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admission(max_inflight: int = 2, queue_ms: int = 40,
              service_ms: int = 10) -> tuple[Admission, Clock]:
    clock = Clock()
    settings = AdmissionSettings(True, max_inflight, queue_ms / 1000.0, service_ms / 1000.0)
    return Admission(settings, clock), clock


async def settle() -> None:
    """A few turns of the loop (no time passes: the clock is fake), so woken waiters run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_slots_admit_at_once_and_a_full_queue_refuses_with_a_hint() -> None:
    adm, _ = admission(max_inflight=2, queue_ms=40, service_ms=10)
    a = await adm.acquire(CONFIRM)
    b = await adm.acquire(CONFIRM)
    assert adm.inflight == 2
    # Each queued confirm waits about service/slots = 5 ms more: 8 fit in 40 ms, the 9th not.
    waiters = [asyncio.create_task(adm.acquire(CONFIRM)) for _ in range(8)]
    await settle()
    assert not any(w.done() for w in waiters)
    with pytest.raises(Refused) as refused:
        adm.check(CONFIRM, None)
    assert refused.value.reason == "queue full"
    # Draining 8 queued + 2 running at 5 ms each: 50 ms.
    assert refused.value.retry_after_ms == 50
    assert "retry after 50 ms" in str(refused.value)
    assert adm.refused == {"queue full": 1} and adm.slowest_refusal_s == {"queue full": 0.0}
    adm.release(a)
    adm.release(b)
    await settle()
    assert sum(w.done() for w in waiters) == 2 and adm.inflight == 2
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_views_are_shed_before_confirms_and_confirms_jump_the_queue() -> None:
    adm, _ = admission(max_inflight=1, queue_ms=40, service_ms=10)
    running = await adm.acquire(CONFIRM)
    # A view may queue for half the target (20 ms = 2 positions), a query a quarter (1).
    views = [asyncio.create_task(adm.acquire(VIEW)) for _ in range(2)]
    await settle()
    with pytest.raises(Refused):
        adm.check(VIEW, None)
    with pytest.raises(Refused):
        adm.check(QUERY, None)
    # Confirms still queue (the views behind them do not count against a confirm).
    confirm = asyncio.create_task(adm.acquire(CONFIRM))
    await settle()
    assert not confirm.done()
    adm.release(running)
    await settle()
    assert confirm.done() and not any(v.done() for v in views)
    adm.release(confirm.result())
    await settle()
    assert views[0].done() and not views[1].done()
    adm.release(views[0].result())
    await settle()
    adm.release(views[1].result())
    assert adm.inflight == 0


async def test_a_deadline_too_short_to_be_served_is_refused_at_once() -> None:
    adm, _ = admission(max_inflight=4, service_ms=10)
    with pytest.raises(Refused) as refused:
        await adm.acquire(CONFIRM, time_remaining_s=0.005)
    assert refused.value.reason == "deadline too short"
    assert adm.inflight == 0
    ticket = await adm.acquire(CONFIRM, time_remaining_s=0.5)
    adm.release(ticket)


async def test_service_time_follows_observed_calls() -> None:
    adm, clock = admission(max_inflight=1, queue_ms=40, service_ms=10)
    for _ in range(30):
        ticket = await adm.acquire(CONFIRM)
        clock.now += 0.1
        adm.release(ticket)
    assert adm.service_s == pytest.approx(0.1, rel=0.01)
    held = await adm.acquire(CONFIRM)
    # One position now costs 100 ms, more than the 40 ms target: refused, not queued.
    with pytest.raises(Refused):
        adm.check(CONFIRM, None)
    adm.release(held)


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    adm, _ = admission(max_inflight=1)
    held = await adm.acquire(CONFIRM)
    waiter = asyncio.create_task(adm.acquire(CONFIRM))
    await settle()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    adm.release(held)
    assert adm.inflight == 0
    again = await adm.acquire(CONFIRM)
    adm.release(again)
    assert adm.inflight == 0


async def test_a_waiter_gives_up_within_its_budget() -> None:
    adm, _ = admission(max_inflight=1, queue_ms=10, service_ms=1)
    held = await adm.acquire(CONFIRM)
    with pytest.raises(Refused) as refused:
        await asyncio.wait_for(adm.acquire(CONFIRM), timeout=2.0)
    assert refused.value.reason == "waited too long"
    adm.release(held)
    assert adm.inflight == 0


def test_priorities_by_method_and_never_for_unlisted_methods() -> None:
    priorities = parse_priorities(["WithdrawService/ConfirmWithdraw:0", "WithdrawService/GetOrder:2"])
    gate = Gate(Admission(AdmissionSettings(True, 1, 0.01)), priorities)
    full = "/mesh.withdraw.v1.WithdrawService/ConfirmWithdraw"
    assert method_key(full) == "WithdrawService/ConfirmWithdraw"
    assert gate.priority_of("/mesh.withdraw.v1.WithdrawService/ConfirmWithdraw") == CONFIRM
    assert gate.priority_of("/mesh.withdraw.v1.WithdrawService/GetOrder") == QUERY
    assert gate.priority_of("/mesh.withdraw.v1.PayoutCoordinationService/SettlePayout") is None
    assert gate.priority_of("/grpc.health.v1.Health/Check") is None
    assert Gate(None, priorities).priority_of("/mesh.withdraw.v1.WithdrawService/GetOrder") is None
    for bad in ("ConfirmWithdraw:0", "WithdrawService/ConfirmWithdraw", "WithdrawService/X:7"):
        with pytest.raises(ValueError):
            parse_priorities([bad])
