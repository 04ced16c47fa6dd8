"""recon's store over one asyncpg pool: repositories bound to the pool (each statement its
own transaction) or to one transaction (a unit of work)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from recon_svc.ports import Repositories, Transaction
from recon_svc.records import RecountedSums
from recon_svc.store.audits import AuditQueries
from recon_svc.store.checks import CheckQueue
from recon_svc.store.daily import DailyQueries
from recon_svc.store.discrepancies import DiscrepancyStore
from recon_svc.store.feeds import FeedPositions
from recon_svc.store.pages import PageWriter
from recon_svc.store.self_checks import SelfCheckQueue
from recon_svc.store.sums import RunningSums, running_and_recount


class PgStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._autocommit = Repositories(
            feeds=FeedPositions(pool), checks=CheckQueue(pool), self_checks=SelfCheckQueue(pool),
            discrepancies=DiscrepancyStore(pool), audits=AuditQueries(pool), sums=RunningSums(pool),
            daily=DailyQueries(pool))

    @property
    def autocommit(self) -> Repositories:
        return self._autocommit

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[Transaction]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield Transaction(
                feeds=FeedPositions(conn), checks=CheckQueue(conn), self_checks=SelfCheckQueue(conn),
                discrepancies=DiscrepancyStore(conn), audits=AuditQueries(conn), sums=RunningSums(conn),
                daily=DailyQueries(conn), pages=PageWriter(conn))

    async def sums_with_recount(self) -> RecountedSums:
        return await running_and_recount(self.pool)
