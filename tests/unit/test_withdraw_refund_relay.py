"""The refund relay against fakes of its ports: it settles the jobs it claimed through the
claim (the unit of work), and a fault hook (faults.py) runs before each refund call, so
a drill's or a test's crash lands between FAILED and the refund."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest

from tests.unit.withdraw_fakes import withdraw_settings
from withdraw_svc.faults import FaultPlan, exit_before_refund
from withdraw_svc.peers import PeerError
from withdraw_svc.records import RefundRow
from withdraw_svc.relay import RefundRelay


class FakeClaim:
    def __init__(self, jobs: list[RefundRow]) -> None:
        self.jobs = jobs
        self.settled: list[tuple[str, str]] = []
        self.retried: list[tuple[str, str, float]] = []

    async def done(self, row: RefundRow, outcome: str) -> None:
        self.settled.append((row.order_id, outcome))

    async def retry_after(self, row: RefundRow, error: str, backoff_s: float) -> None:
        self.retried.append((row.order_id, error, backoff_s))


class FakeRefundOutbox:
    def __init__(self, jobs: list[RefundRow]) -> None:
        self.claim = FakeClaim(jobs)
        self.asked: list[Sequence[str] | None] = []

    @asynccontextmanager
    async def claim_refunds(self, limit: int, order_ids: Sequence[str] | None) -> AsyncIterator[FakeClaim]:
        self.asked.append(order_ids)
        yield self.claim


class FakeLedger:
    def __init__(self, away: frozenset[str] = frozenset()) -> None:
        self.away = away
        self.refunded: list[str] = []

    async def refund(self, order_id: str) -> str:
        if order_id in self.away:
            raise PeerError("account", grpc.StatusCode.UNAVAILABLE, "ledger away")
        self.refunded.append(order_id)
        return "REFUNDED"


class Died(Exception):
    """Raised by the test's fault hook where the drill's would end the process."""


JOBS = [RefundRow(1, "o-1", 0), RefundRow(2, "o-2", 3)]


async def test_claimed_jobs_are_settled_or_retried_through_the_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    outbox, ledger = FakeRefundOutbox(list(JOBS)), FakeLedger(away=frozenset({"o-2"}))
    relay = RefundRelay(withdraw_settings(monkeypatch), outbox, ledger)
    assert await relay.process(["o-1", "o-2"]) == 2
    assert outbox.asked == [["o-1", "o-2"]]
    assert outbox.claim.settled == [("o-1", "REFUNDED")]
    # The failed one backs off by its attempts so far (2 ** 3 s), capped by the settings.
    assert [(o, backoff) for o, _, backoff in outbox.claim.retried] == [("o-2", 8.0)]


async def test_the_fault_hook_runs_before_the_refund_call_and_nothing_is_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    def crash(order_id: str) -> None:
        seen.append(order_id)
        raise Died(order_id)

    outbox, ledger = FakeRefundOutbox(list(JOBS[:1])), FakeLedger()
    relay = RefundRelay(withdraw_settings(monkeypatch), outbox, ledger, before_refund=crash)
    with pytest.raises(Died):
        await relay.process()
    assert seen == ["o-1"] and ledger.refunded == [] and outbox.claim.settled == []


def test_the_crash_is_planned_only_when_its_switch_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FaultPlan.from_settings(withdraw_settings(monkeypatch)).before_refund is None
    monkeypatch.setenv("WITHDRAW_TEST_CRASH_BEFORE_REFUND", "1")
    assert FaultPlan.from_settings(withdraw_settings(monkeypatch)).before_refund is exit_before_refund
