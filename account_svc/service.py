"""Use cases of the ledger: credit (forced and bulk), deduct, refund, queries."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, ParamSpec, Protocol, TypeVar

from account_svc import domain
from account_svc.domain import CreditOutcome, Entry, Kind, RefundOutcome
from account_svc.peers import OrdersUnavailable
from account_svc.ports import Contention, KeyTaken, LedgerStatements, LedgerStore
from campaign.tokens import RewardGrant, TokenError, verify, verify_many
from meshkit import paging
from meshkit.errors import Conflict, DomainError, InvalidArgument, Unavailable
from meshkit.logs import log_context
from meshkit.outage import OutageLog, outage_of

log = logging.getLogger(__name__)
_outages = OutageLog(log)

# Each retry follows a race lost to a concurrent writer that has committed since, so the
# next look-up sees it; more than a few in a row means something else is wrong.
MAX_ATTEMPTS = 8

P = ParamSpec("P")
R = TypeVar("R")


def store_down_is_unavailable(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A ledger call that could not reach PostgreSQL answers UNAVAILABLE, not INTERNAL: for a
    money-moving call that means "outcome unknown, retry the same request", which every
    call here makes safe (idempotent on its business key)."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except DomainError:
            raise
        except Exception as exc:
            # PostgreSQL unreachable, refusing connections, or shutting down (meshkit.outage).
            outage = outage_of(exc)
            if outage is None:
                raise
            _outages.warn(method.__qualname__, outage)
            raise Unavailable("ledger database unavailable; retry the same request",
                              reason="STORE_UNAVAILABLE") from exc

    return guarded


class UserLimit(Protocol):
    """A per-user rate limit (meshkit.user_limits.UserRateLimit): raises RateLimited."""

    async def check(self, uid: int) -> None: ...


class OrderStatesPort(Protocol):
    """withdraw_svc's state of an order (account_svc.peers.OrderStates)."""

    async def state_of(self, order_id: str) -> str | None: ...


# One item of a deduct batch: (the debit, replayed), or why it was refused.
DeductOutcome = tuple[Entry, bool] | DomainError


class CreditResult(NamedTuple):
    # A named tuple: the bulk path makes one per reward.
    grant: RewardGrant
    outcome: CreditOutcome
    message: str = ""


@dataclass(frozen=True)
class CreditBatch:
    results: list[CreditResult]
    # Balance of each uid that received a credit in this batch, right after it.
    balances: dict[int, int]


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        token_keys: Mapping[str, bytes],
        token_max_age_s: int,
        clock: Callable[[], float] = time.time,
        orders: OrderStatesPort | None = None,
        credit_limit: UserLimit | None = None,
    ) -> None:
        self.store = store
        self.sql = store.statements  # one autocommit statement per call
        self.token_keys = token_keys
        self.token_max_age_s = token_max_age_s
        self.clock = clock
        # withdraw_svc, asked before every refund (None: ACCOUNT_REFUND_CHECKS_ORDER=false).
        self.orders = orders
        # Forced credits (ForceCredit with tokens) per uid and minute, across replicas.
        self.credit_limit = credit_limit

    # --- tokens and credits ---------------------------------------------------------------

    def verify_token(self, token: str, expected_uid: int | None) -> RewardGrant:
        return verify(token, self.token_keys, expected_uid=expected_uid, now=self.clock(),
                      max_age_s=self.token_max_age_s)

    def verify_tokens(self, tokens: Sequence[str]) -> list[RewardGrant | TokenError]:
        """verify_token(token, None) of each token, as one loop (the bulk path's batches)."""
        return verify_many(tokens, self.token_keys, now=self.clock(), max_age_s=self.token_max_age_s)

    @store_down_is_unavailable
    async def force_credit(self, uid: int, tokens: Sequence[str]) -> tuple[list[CreditResult], int]:
        """Credit the tokens of `uid` not yet credited. Every token is checked before
        anything is written: one bad token (or a reward id replayed with other content)
        refuses the call and credits nothing."""
        domain.validate_force_credit(uid, tokens)
        if tokens and self.credit_limit is not None:
            # Before any token is verified or anything written: a refusal changes nothing.
            await self.credit_limit.check(uid)
        grants: list[RewardGrant] = []
        for index, token in enumerate(tokens):
            try:
                grants.append(self.verify_token(token, expected_uid=uid))
            except TokenError as exc:
                raise InvalidArgument(f"tokens[{index}]: {exc.message}", reason=exc.reason) from exc
        with log_context(uid=uid):
            if not grants:
                return [], await self.sql.balance(uid)
            batch = await self.credit(grants, all_or_nothing=True, balance_of=uid)
            balance = batch.balances.get(uid, 0)
            credited = sum(1 for r in batch.results if r.outcome is CreditOutcome.CREDITED)
            if credited:
                log.info("force-credited %d of %d rewards", credited, len(grants))
        return batch.results, balance

    @store_down_is_unavailable
    async def credit(
        self, grants: Sequence[RewardGrant], *, all_or_nothing: bool, balance_of: int = 0,
        on: LedgerStatements | None = None, expect_fresh: bool = False,
    ) -> CreditBatch:
        """Credit verified grants once per reward id, in one statement (on the handle `on`
        when given, else on a pooled connection). A reward id already credited with other
        content is a CONFLICT result, or, with all_or_nothing, a Conflict error and
        nothing written. expect_fresh: the grants are most likely all new (the bulk path,
        on an autocommit handle; balances may then be left out): see LedgerRepository.credit."""
        if not grants:
            return CreditBatch([], {})
        plan = domain.plan_credits(grants, {})
        if all_or_nothing and plan.conflicts:
            raise self._conflict(plan)
        for _attempt in range(MAX_ATTEMPTS):
            try:
                written = await (on or self.sql).credit(
                    plan.fresh, all_or_nothing=all_or_nothing, balance_of=balance_of,
                    expect_fresh=expect_fresh)
            except (KeyTaken, Contention) as exc:
                # Lost a race (usually with the other credit path) for one of the reward
                # ids: nothing was written; the next run sees the winner's credit.
                log.info("credit batch of %d raced (%s); retrying", len(plan.fresh), exc)
                continue
            # Nothing stored before: the outcomes are the plan's (the usual bulk batch).
            final = domain.plan_credits(grants, written.stored) if written.stored else plan
            if all_or_nothing and final.conflicts:
                raise self._conflict(final)
            results = [
                CreditResult(grant, outcome, message)
                for grant, outcome, message in zip(grants, final.outcomes, final.messages, strict=True)
            ]
            return CreditBatch(results, written.balances)
        raise Unavailable("crediting kept racing with concurrent credits; retry", reason="CONTENTION")

    @staticmethod
    def _conflict(plan: domain.CreditPlan) -> Conflict:
        first = plan.conflicts[0]
        return Conflict(f"tokens[{first}]: {plan.messages[first]}", reason="REWARD_ID_REUSED")

    # --- debits and refunds ---------------------------------------------------------------

    @store_down_is_unavailable
    async def deduct(self, order_id: str, uid: int, amount_fen: int) -> tuple[Entry, bool]:
        """(the order's debit, replayed). Exactly one debit per order id."""
        domain.validate_deduct(order_id, uid, amount_fen)
        with log_context(order_id=order_id, uid=uid):
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    # The fast path is a single autocommit statement: one round trip.
                    entry = await self.sql.debit(order_id, uid, amount_fen)
                except Contention:
                    continue
                except KeyTaken as exc:
                    if exc.constraint != "entries_debit_order":
                        raise
                    entry = None
                if entry is not None:
                    log.debug("debited %d fen, balance now %s", amount_fen, entry.balance_after_fen)
                    return entry, False
                # No row: the balance fell short, or the order id is taken (a replay, a
                # concurrent twin that won, or a void). The unique index is committed
                # truth, so look there first.
                prior = await self.sql.debit_or_void(order_id)
                if prior is not None:
                    return domain.replay_of_debit(prior, order_id, uid, amount_fen), True
                balance = await self.sql.balance(uid)
                if balance < amount_fen:
                    raise domain.insufficient(balance, amount_fen)
                # A credit landed between the UPDATE and the read: try again.
            raise Unavailable("deduct kept racing with concurrent writes; retry", reason="CONTENTION")

    @store_down_is_unavailable
    async def deduct_batch(self, items: Sequence[tuple[str, int, int]]) -> list[DeductOutcome]:
        """Deduct each (order_id, uid, amount_fen) with Deduct's rules, in one statement per
        round: one result per item, in order, either (debit, replayed) or the DomainError
        Deduct would have raised for it. Only a call that cannot run at all (too many items,
        the database unreachable, endless contention) raises."""
        domain.validate_deduct_batch(len(items))
        results: list[DeductOutcome | None] = [None] * len(items)
        # Round k holds the k-th occurrence of each order id, so every statement sees
        # distinct order ids and a repeat is judged against what the earlier one left.
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for index, (order_id, uid, amount_fen) in enumerate(items):
            try:
                domain.validate_deduct(order_id, uid, amount_fen)
            except DomainError as exc:
                results[index] = exc
                continue
            k = seen.get(order_id, 0)
            seen[order_id] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(index)
        for members in rounds:
            done = await self._deduct_round([items[i] for i in members])
            for index, outcome in zip(members, done, strict=True):
                results[index] = outcome
        debited = sum(1 for r in results if isinstance(r, tuple) and not r[1])
        log.debug("deduct batch of %d: %d debited", len(items), debited)
        return [r for r in results if r is not None]

    async def _deduct_round(self, items: list[tuple[str, int, int]]) -> list[DeductOutcome]:
        for _attempt in range(MAX_ATTEMPTS):
            try:
                done = await self.sql.debit_batch(items)
            except (Contention, KeyTaken) as exc:
                # A twin or a void of one of these order ids committed meanwhile: nothing
                # was written; the next run sees it as a repeat.
                log.info("deduct batch of %d raced (%s); retrying", len(items), exc)
                continue
            outcomes: list[DeductOutcome] = []
            for order_id, uid, amount_fen in items:
                outcome = done[order_id]
                if outcome.entry is None:
                    outcomes.append(domain.insufficient(outcome.balance_fen, amount_fen))
                elif outcome.new:
                    outcomes.append((outcome.entry, False))
                else:
                    try:
                        prior = domain.replay_of_debit(outcome.entry, order_id, uid, amount_fen)
                    except DomainError as exc:
                        outcomes.append(exc)
                    else:
                        outcomes.append((prior, True))
            return outcomes
        raise Unavailable("deduct batch kept racing with concurrent writes; retry", reason="CONTENTION")

    @store_down_is_unavailable
    async def refund(self, order_id: str) -> tuple[RefundOutcome, Entry, bool]:
        """(outcome, refund or void entry, replayed). Refunds the order's debit exactly
        once; with no debit, voids the order id so a late debit can never land."""
        domain.validate_order_id(order_id)
        with log_context(order_id=order_id):
            await self._check_order_failed(order_id)
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    return await self._refund_once(order_id)
                except (Contention, KeyTaken) as exc:
                    log.info("refund raced (%s); retrying", exc)
            raise Unavailable("refund kept racing with concurrent writes; retry", reason="CONTENTION")

    async def _check_order_failed(self, order_id: str) -> None:
        """The caller's word that the order failed is not enough: its owner is asked. An
        order FAILED in withdraw_svc never becomes anything else (its states are a
        compare-and-set), so the answer cannot go stale before the refund commits."""
        if self.orders is None:
            return
        try:
            state = await self.orders.state_of(order_id)
        except OrdersUnavailable as exc:
            log.warning("refund not checked against withdraw_svc: %s", exc)
            raise Unavailable("withdraw_svc could not be asked whether the order failed; retry",
                              reason="ORDERS_UNAVAILABLE") from exc
        refusal = domain.refund_refusal(order_id, state)
        if refusal is not None:
            log.warning("refund refused: %s", refusal.message)
            raise refusal

    async def _refund_once(self, order_id: str) -> tuple[RefundOutcome, Entry, bool]:
        async with self.store.transaction() as tx:
            prior = await tx.debit_or_void(order_id)
            if prior is None:
                void = await tx.insert_void(order_id)
                if void is not None:
                    log.info("no debit for order; voided it")
                    return RefundOutcome.VOIDED, void, False
                # A debit or void committed first; this new statement sees it.
                prior = await tx.debit_or_void(order_id)
                if prior is None:
                    raise Contention("order id taken but its entry is not visible")
            if prior.kind is Kind.VOID:
                return RefundOutcome.VOIDED, prior, True
            assert prior.uid is not None
            # Concurrent refunds of this debit queue on the account row; the one that goes
            # second then sees the first one's refund.
            await tx.lock_account(prior.uid)
            done = await tx.refund_of(prior.entry_id)
            if done is not None:
                return RefundOutcome.REFUNDED, done, True
            refund = await tx.insert_refund(prior)
            log.info("refunded %d fen, balance now %s", refund.amount_fen, refund.balance_after_fen)
            return RefundOutcome.REFUNDED, refund, False

    # --- queries --------------------------------------------------------------------------

    @store_down_is_unavailable
    async def balance(self, uid: int) -> int:
        domain.validate_uid(uid)
        return await self.sql.balance(uid)

    @store_down_is_unavailable
    async def list_entries(self, uid: int, page_size: int, page_token: str) -> tuple[list[Entry], str]:
        domain.validate_uid(uid)
        limit, below = domain.page_of(page_size, page_token)
        rows = await self.sql.list_entries(uid, below, limit + 1)
        page = rows[:limit]
        next_token = paging.row_token(page[-1].entry_id) if len(rows) > limit else ""
        return page, next_token

    @store_down_is_unavailable
    async def order_entries(self, order_id: str) -> list[Entry]:
        domain.validate_order_id(order_id)
        return await self.sql.order_entries(order_id)

    @store_down_is_unavailable
    async def orders_entries(self, order_ids: Sequence[str]) -> dict[str, list[Entry]]:
        """Entries per distinct order id, in request order (an empty list when none)."""
        ids = domain.distinct_order_ids(order_ids)
        found: dict[str, list[Entry]] = {order_id: [] for order_id in ids}
        if ids:
            for entry in await self.sql.orders_entries(ids):
                assert entry.order_id is not None
                found[entry.order_id].append(entry)
        return found
