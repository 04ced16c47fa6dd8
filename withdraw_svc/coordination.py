"""Payout coordination, called by payout_svc: begin and settle payouts, one order or a
batch at a time, each a compare-and-set the state machine allows."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from meshkit import validate
from meshkit.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from meshkit.logs import log_context
from withdraw_svc.domain import (
    MAX_PAYOUT_BATCH,
    FailureReason,
    Order,
    OrderState,
    failure_refusal,
    owes_refund,
    validate_order_id,
)
from withdraw_svc.peers import PeerError
from withdraw_svc.ports import PayoutOrders, PayoutRecords, Wake

log = logging.getLogger(__name__)


class PayoutCoordinator:
    """Moves orders as payout_svc pays them: BeginPayout takes an order PENDING_PAYOUT ->
    PAYING; payout_svc's word settles it SUCCEEDED; a FAILED settlement (which refunds) is
    accepted only once the gateway, asked here, says FAILED or has no record."""

    def __init__(self, repo: PayoutOrders, wake_refunds: Wake, gateway: PayoutRecords) -> None:
        self.repo = repo
        self.wake_refunds = wake_refunds
        self.gateway = gateway

    async def orders_of(self, order_ids: Sequence[str]) -> dict[str, Order]:
        """The orders named that exist (for a peer about to act on them)."""
        validate.count("order_ids", order_ids, MAX_PAYOUT_BATCH, reason="BATCH_TOO_LARGE")
        for order_id in order_ids:
            validate.identifier("order_ids", order_id)
        return await self.repo.get_orders(order_ids)

    async def _failures_refused(self, order_ids: Sequence[str]) -> dict[str, DomainError]:
        """One QueryPayouts for all of `order_ids` (declared FAILED): the ones the gateway
        does not confirm, with why. The gateway away refuses all of them as UNAVAILABLE
        (nothing changes; payout_svc tries again without spending an attempt)."""
        if not order_ids:
            return {}
        try:
            records = await self.gateway.query_many(order_ids)
        except PeerError as err:
            log.warning("cannot confirm %d payout failures with the gateway: %s", len(order_ids), err)
            away = Unavailable(f"the gateway could not be asked whether the payout failed ({err.code.name}); "
                               "retry", reason="GATEWAY_UNAVAILABLE")
            return dict.fromkeys(order_ids, away)
        refused: dict[str, DomainError] = {}
        for order_id in order_ids:
            refusal = failure_refusal(order_id, records[order_id].view)
            if refusal is not None:
                log.warning("refused a FAILED settlement: %s", refusal.message)
                refused[order_id] = refusal
        return refused

    async def begin_payout(self, order_id: str) -> tuple[Order, bool]:
        validate_order_id(order_id)
        with log_context(order_id=order_id):
            moved = await self.repo.transition(
                order_id, [OrderState.PENDING_PAYOUT], OrderState.PAYING, "payout started"
            )
            if moved is not None:
                return moved, True
            return await self._existing(order_id), False

    async def begin_payout_batch(self, order_ids: Sequence[str]) -> list[BeginOutcome]:
        """begin_payout for each order id: one UPDATE (one commit) for all, one read of the
        ones it did not move. A result per item, in order: (order, acquired) or the
        DomainError begin_payout would have raised. Only a call that cannot run at all (too
        many items, the database away) raises."""
        validate.count("order_ids", order_ids, MAX_PAYOUT_BATCH, reason="BATCH_TOO_LARGE")
        results: list[BeginOutcome | None] = [None] * len(order_ids)
        valid: list[str] = []
        for index, order_id in enumerate(order_ids):
            try:
                validate_order_id(order_id)
            except DomainError as exc:
                results[index] = exc
            else:
                valid.append(order_id)
        moved = await self.repo.begin_payouts(valid) if valid else {}
        unmoved = {o for o in valid if o not in moved}
        rest = await self.repo.get_orders(list(unmoved)) if unmoved else {}
        answered: set[str] = set()
        for index, order_id in enumerate(order_ids):
            if results[index] is not None:
                continue
            first = order_id not in answered
            answered.add(order_id)
            if order_id in moved:
                # A repeated id is a repeat of the first: it did not move the order itself.
                results[index] = (moved[order_id], first)
            elif order_id in rest:
                results[index] = (rest[order_id], False)
            else:
                results[index] = NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
        return [r for r in results if r is not None]

    async def settle_payout(
        self, order_id: str, result: OrderState | None, reason: str
    ) -> tuple[Order, bool]:
        """(order, replayed)."""
        _validate_settle(order_id, result, reason)
        assert result is not None
        with log_context(order_id=order_id):
            moved: Order | None
            if result is OrderState.FAILED:
                refused = await self._failures_refused([order_id])
                if order_id in refused:
                    raise refused[order_id]
            if result is OrderState.SUCCEEDED:
                moved = await self.repo.transition(
                    order_id, [OrderState.PAYING], OrderState.SUCCEEDED, "payout succeeded"
                )
            else:
                moved = await self.repo.fail_order(
                    order_id, [OrderState.PENDING_PAYOUT, OrderState.PAYING],
                    FailureReason.PAYOUT_FAILED, reason[:200],
                )
                if moved is not None and owes_refund(moved.state):
                    self.wake_refunds()
            if moved is not None:
                return moved, False
            return _settle_replay(order_id, await self._existing(order_id), result), True

    async def settle_payout_batch(
        self, items: Sequence[tuple[str, OrderState | None, str]]
    ) -> list[SettleOutcome]:
        """settle_payout for each (order_id, result, reason): one UPDATE (one commit) for
        all, one read of the ones it did not move. A result per item, in order: (order,
        replayed) or the DomainError settle_payout would have raised. A repeated order id is
        judged against what the earlier item left, as sequential calls would be."""
        validate.count("settles", items, MAX_PAYOUT_BATCH, reason="BATCH_TOO_LARGE")
        results: list[SettleOutcome | None] = [None] * len(items)
        valid: list[int] = []
        for index, (order_id, result, reason) in enumerate(items):
            try:
                _validate_settle(order_id, result, reason)
            except DomainError as exc:
                results[index] = exc
            else:
                valid.append(index)
        refused = await self._failures_refused(list(dict.fromkeys(
            items[i][0] for i in valid if items[i][1] is OrderState.FAILED)))
        firsts: dict[str, tuple[str, OrderState, str]] = {}
        for index in valid:
            order_id, result, reason = items[index]
            assert result is not None
            if result is OrderState.FAILED and order_id in refused:
                # Refused as such: changes nothing, so a later item is judged without it.
                results[index] = refused[order_id]
                continue
            firsts.setdefault(order_id, (order_id, result, reason[:200]))
        moved = await self.repo.settle_payouts(list(firsts.values())) if firsts else {}
        if any(owes_refund(o.state) for o in moved.values()):
            self.wake_refunds()
        unmoved = [o for o in firsts if o not in moved]
        rest = await self.repo.get_orders(unmoved) if unmoved else {}
        answered: set[str] = set()
        for index, (order_id, result, _reason) in enumerate(items):
            if results[index] is not None:
                continue
            assert result is not None
            current = moved.get(order_id) or rest.get(order_id)
            if order_id in moved and order_id not in answered:
                results[index] = (moved[order_id], False)
            elif current is None:
                results[index] = NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
            else:
                try:
                    results[index] = (_settle_replay(order_id, current, result), True)
                except DomainError as exc:
                    results[index] = exc
            answered.add(order_id)
        return [r for r in results if r is not None]

    async def _existing(self, order_id: str) -> Order:
        order = await self.repo.get_order(order_id)
        if order is None:
            raise NotFound(f"order_id {order_id!r} not found", reason="ORDER_NOT_FOUND")
        return order


BeginOutcome = tuple[Order, bool] | DomainError
SettleOutcome = tuple[Order, bool] | DomainError


def _validate_settle(order_id: str, result: OrderState | None, reason: str) -> None:
    validate_order_id(order_id)
    if result not in (OrderState.SUCCEEDED, OrderState.FAILED):
        raise InvalidArgument("result: must be SUCCEEDED or FAILED", reason="BAD_RESULT")
    # Any length (the stored reason is cut at 200), but nothing PostgreSQL refuses.
    validate.text("reason", reason, max_len=None, multiline=True)


def _settle_replay(order_id: str, current: Order, result: OrderState) -> Order:
    """`current` when a settle to `result` that moved nothing is a replay; otherwise the
    refusal settle_payout answers."""
    if current.state is result:
        return current
    if current.state.terminal:
        raise FailedPrecondition(
            f"order {order_id} is {current.state} (terminal) and cannot become {result}",
            reason="ORDER_TERMINAL",
        )
    allowed = "PAYING" if result is OrderState.SUCCEEDED else "PENDING_PAYOUT or PAYING"
    raise FailedPrecondition(
        f"order {order_id} is {current.state}; only a {allowed} order can be settled {result}",
        reason="ORDER_NOT_PAYING",
    )
