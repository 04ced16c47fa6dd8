"""The withdraw page: balance, limits, gate, bound methods and recent orders, rendered even
when a weak dependency is away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from meshkit import validate
from withdraw_svc.bound_methods import BoundMethods
from withdraw_svc.domain import MAX_TOKENS, GateDecision, Limits, Order, validate_uid
from withdraw_svc.gate import GateHolder
from withdraw_svc.peers import Method, PeerError
from withdraw_svc.ports import Ledger, OrderReads

log = logging.getLogger(__name__)

RECENT_ORDERS = 5


@dataclass(frozen=True)
class Page:
    balance_fen: int
    balance_stale: bool
    min_fen: int
    max_fen: int
    gate: GateDecision
    methods: list[Method]
    methods_stale: bool
    recent: list[Order]


class WithdrawPage:
    def __init__(self, orders: OrderReads, account: Ledger, methods: BoundMethods, gate: GateHolder,
                 limits: Limits, credit_deadline_s: float) -> None:
        self.orders = orders
        self.account = account
        self.methods = methods
        self.gate = gate
        self.limits = limits
        self.credit_deadline_s = credit_deadline_s

    async def page(self, uid: int, tokens: Sequence[str]) -> Page:
        validate_uid(uid)
        validate.count("tokens", tokens, MAX_TOKENS, reason="BAD_TOKENS")
        (balance, stale), (methods, methods_stale), recent = await asyncio.gather(
            self._balance(uid, [t for t in tokens if t]),
            self.methods.for_page(uid),
            self.orders.list_orders(uid, RECENT_ORDERS),
        )
        return Page(balance, stale, self.limits.min_fen, self.limits.max_fen,
                    self.gate.evaluate(uid), methods, methods_stale, recent)

    async def _balance(self, uid: int, tokens: list[str]) -> tuple[int, bool]:
        """Weak dependency: credit and balance share one short budget; past it the page
        renders with a stale balance."""
        budget = self.credit_deadline_s
        started = time.monotonic()
        if tokens:
            try:
                credit = await self.account.force_credit(uid, tokens, budget)
                return credit.balance_fen, False
            except PeerError as err:
                log.info("page: weak force-credit failed for uid %d: %s", uid, err)
        remaining = budget - (time.monotonic() - started)
        if remaining < 0.01:
            return 0, True
        try:
            return await self.account.balance(uid, remaining), False
        except PeerError as err:
            log.info("page: balance unavailable for uid %d: %s", uid, err)
            return 0, True
