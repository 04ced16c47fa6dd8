"""recon's use cases over fakes of its own ports (no PostgreSQL, no peers): a due order is
judged from its facts, a finding is looked at twice before it is told, and everything a
batch decides is written in its one unit of work."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from meshkit.timeconv import utcnow
from recon_svc.alerts import Alerts
from recon_svc.domain import Discrepancy, EntryView, NewDiscrepancy, OrderView, PayoutView
from recon_svc.ports import Transaction
from recon_svc.records import DueCheck, OrderFacts, Recheck, Verdict
from recon_svc.service import ReconService
from recon_svc.settings import Settings
from recon_svc.sums import Moves, Sum
from tests.harness import patched_env


class FakeChecks:
    def __init__(self, due: list[DueCheck], facts: dict[str, OrderFacts]) -> None:
        self.due, self._facts = due, facts
        self.finished: list[tuple[dict[str, Verdict], dict[str, Recheck]]] = []

    async def take_due(self, horizon: datetime, limit: int) -> list[DueCheck]:
        return self.due[:limit]

    async def next_due(self) -> datetime | None:
        return None

    async def facts(self, order_ids: Sequence[str]) -> dict[str, OrderFacts]:
        return {i: self._facts[i] for i in order_ids}

    async def finish(self, done: Sequence[DueCheck], verdicts: dict[str, Verdict], now: datetime,
                     self_check: bool, rechecks: dict[str, Recheck]) -> None:
        self.finished.append((verdicts, rechecks))
        self.due = [d for d in self.due if d.order_id in rechecks]


class FakeDiscrepancies:
    def __init__(self) -> None:
        self.stored: list[NewDiscrepancy] = []

    async def record(self, found: Sequence[NewDiscrepancy]) -> list[Discrepancy]:
        self.stored += found
        now = utcnow()
        return [Discrepancy(n, f.reason, f.subject, f.order_id, f.uid, f.detail, "OPEN", f.source, "",
                            now, now) for n, f in enumerate(found, start=len(self.stored))]


class FakeSums:
    def __init__(self) -> None:
        self.moves: list[Moves] = []

    async def add(self, moves: Moves) -> None:
        self.moves.append(moves)


class FakeStore:
    """Counts units of work; their repositories are the fakes above."""

    def __init__(self, checks: FakeChecks) -> None:
        self.checks, self.discrepancies, self.sums = checks, FakeDiscrepancies(), FakeSums()
        self.units = 0

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Transaction]:
        self.units += 1
        unused = None
        yield Transaction(feeds=unused, checks=self.checks, self_checks=unused,  # type: ignore[arg-type]
                          discrepancies=self.discrepancies, audits=unused, sums=self.sums,
                          daily=unused, pages=unused)


def service(store: FakeStore) -> ReconService:
    with patched_env({"RECON_GRACE_S": "5", "RECON_REFUND_GRACE_S": "0", "RECON_SELF_CHECK": "false",
                      # No socket is opened: plaintext, whatever TLS the suite's environment has.
                      "MESH_INSECURE": "1", "MESH_CERTS_DIR": "", "MESH_TLS_CA": "", "MESH_TLS_CERT": "",
                      "MESH_TLS_KEY": ""}):
        settings = Settings.from_env()
    svc = ReconService(store, settings, Alerts("", 1.0), None, None, None)  # type: ignore[arg-type]
    for name, _ in settings.feeds:
        svc.heads.reached(name, utcnow() + timedelta(seconds=1))
    return svc


def facts(order_id: str, state: str, entries: list[EntryView], payouts: list[PayoutView]) -> OrderFacts:
    return OrderFacts(order_id, OrderView(order_id, 7, 500, state), utcnow() - timedelta(minutes=1),
                      utcnow() - timedelta(minutes=1), entries, payouts)


async def test_a_clean_order_gets_an_ok_verdict_and_its_share_of_the_settled_sums() -> None:
    paid = PayoutView("SUCCEEDED", 500, 1, 500)
    clean = facts("ok", "SUCCEEDED", [EntryView("DEBIT", 500)], [paid])
    checks = FakeChecks([DueCheck("ok", 1, False)], {"ok": clean})
    store = FakeStore(checks)
    assert await service(store).run_checks() == (1, None)
    [(verdicts, rechecks)] = checks.finished
    assert verdicts["ok"].verdict == "ok" and verdicts["ok"].settled is not None
    assert rechecks == {} and store.discrepancies.stored == []
    [moves] = store.sums.moves
    assert dict((name, (c, f)) for name, c, f in moves.rows())[Sum.SETTLED] == (1, 500)
    assert store.units == 1


async def test_a_finding_is_looked_at_once_more_before_it_is_told() -> None:
    unrefunded = facts("f", "FAILED", [EntryView("DEBIT", 500)], [])
    checks = FakeChecks([DueCheck("f", 1, False)], {"f": unrefunded})
    store = FakeStore(checks)
    svc = service(store)
    await svc.run_checks()
    [(verdicts, rechecks)] = checks.finished
    assert verdicts == {} and rechecks["f"].confirming and store.discrepancies.stored == []

    checks.due = [dataclasses.replace(checks.due[0], confirming=True)]
    await svc.run_checks()
    assert [d.reason for d in store.discrepancies.stored] == ["missing_refund"]
    assert checks.finished[-1][0]["f"].verdict == "discrepancy"
    assert store.units == 2
