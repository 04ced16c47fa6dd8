"""Use cases of the payment platform stand-in."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway_mock.domain import (
    MAX_BATCH,
    METHODS_PAGE,
    CapacityExceeded,
    CapacityWindow,
    ChannelFaults,
    Method,
    MethodConflict,
    MethodNotBound,
    Payout,
    PayoutConflict,
    PayoutNotFound,
    PayoutRequest,
    PayoutState,
    ReplyLost,
    TransientError,
    check_id,
    check_uid,
    decode_page_token,
    distinct_order_ids,
    encode_page_token,
    mask_account,
    page_size,
    validate_bind,
)
from gateway_mock.ports import GatewayStore, MethodEvents, NewPayout
from meshkit import paging, validate
from meshkit.admin_store import AuditEntry
from meshkit.channels import check_channel
from meshkit.errors import DomainError, InvalidArgument
from meshkit.logs import log_context
from meshkit.timeconv import utcnow

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
BatchOutcome = tuple[Payout, bool] | DomainError


@dataclass
class _BatchDraw:
    """What the dice said for a batch's orders before anything is written."""

    latency_s: float = 0.0
    admitted: set[str] = field(default_factory=set)
    refused: dict[str, DomainError] = field(default_factory=dict)
    to_insert: list[NewPayout] = field(default_factory=list)


class GatewayService:
    def __init__(
        self,
        repo: GatewayStore,
        channels: tuple[str, ...],
        rng: random.Random,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        method_events: MethodEvents | None = None,
    ) -> None:
        self.repo = repo
        self.method_events = method_events
        self.channels = channels
        self.rng = rng
        self.clock = clock
        self.sleep = sleep
        self.faults: dict[str, ChannelFaults] = {ch: ChannelFaults(ch) for ch in channels}
        self.windows: dict[str, CapacityWindow] = {ch: CapacityWindow() for ch in channels}

    # -- payouts ---------------------------------------------------------------------------

    async def payout(self, request: PayoutRequest) -> tuple[Payout, bool]:
        """Returns (payout, replayed)."""
        requested_at = utcnow()
        request.validate(self.channels)
        with log_context(order_id=request.order_id, uid=request.uid):
            faults = self.faults[request.channel]
            # An order already recorded is answered from its record whatever has changed
            # since (binding, capacity): a caller retrying after a lost reply must learn that
            # it was paid, never get a refusal it could mistake for "not paid".
            known = await self.repo.get_payout(request.order_id) is not None
            if not known:
                method = await self.repo.get_method(request.method_id)
                if method is None or method.uid != request.uid or method.channel != request.channel:
                    raise MethodNotBound(request.method_id)
                if not self.windows[request.channel].admit(faults.capacity_per_second, self.clock()):
                    raise CapacityExceeded(request.channel, faults.capacity_per_second)
            # Half the latency before the commit and half after: a caller that gives up
            # mid-call may find either no record or a committed payout, as with a real bank.
            latency = faults.latency_s(self.rng)
            await self.sleep(latency / 2)
            if not known and faults.transient(self.rng):
                raise TransientError(request.channel)
            recorded = await self.repo.insert_payout(
                request, faults.decide(self.rng), faults.async_delay_ms, requested_at)
            payout, created = recorded.payout, recorded.created
            if not created:
                if not payout.same_content(request):
                    raise PayoutConflict(request.order_id)
                payout = await self._finalize_if_due(payout)
            else:
                log.debug("payout recorded: %s %s fen via %s",
                         payout.state.value, payout.amount_fen, payout.channel)
            await self.sleep(latency / 2)
            if faults.reply_lost(self.rng):
                log.info("payout committed, reply dropped on purpose (lost reply fault)")
                raise ReplyLost()
            return payout, not created

    async def payout_batch(self, requests: Sequence[PayoutRequest]) -> list[BatchOutcome]:
        """payout() for each request in one call: a result per item, in order, either
        (payout, replayed) or the DomainError payout() would have raised for it. Capacity,
        transient errors and the outcome are drawn per item; the items travel together, so
        the call takes the longest of their latencies (half before the commit, half after)
        and a lost reply loses the whole answer after the commit. One INSERT for the new
        orders and one read of the rest (recorded before, or refused here)."""
        requested_at = utcnow()
        validate.count("payouts", requests, MAX_BATCH, reason="BATCH_TOO_LARGE")
        results: list[BatchOutcome | None] = [None] * len(requests)
        firsts: dict[str, int] = {}
        for index, request in enumerate(requests):
            try:
                request.validate(self.channels)
            except DomainError as exc:
                results[index] = exc
                continue
            firsts.setdefault(request.order_id, index)
        now = self.clock()
        draw = self._draw(requests, firsts, now)
        await self.sleep(draw.latency_s / 2)
        created = await self.repo.insert_payouts(draw.to_insert, requested_at) if draw.to_insert else {}
        others = [o for o in firsts if o not in created]
        recorded = await self.repo.get_payouts(others) if others else {}
        for index in firsts.values():
            results[index] = await self._first_answer(requests[index], draw, created, recorded, now)
        for index, request in enumerate(requests):
            if results[index] is None:  # a repeat within the batch: judged as a second call
                first = results[firsts[request.order_id]]
                results[index] = await self._replay(first[0], request) if isinstance(first, tuple) else first
        await self.sleep(draw.latency_s / 2)
        # One reply for the batch, lost or not, as payout() draws one per call.
        channels = {requests[i].channel for i in firsts.values()}
        if channels and max((self.faults[ch] for ch in channels),
                            key=lambda f: f.lost_reply_rate).reply_lost(self.rng):
            log.info("payout batch committed, reply dropped on purpose (lost reply fault)")
            raise ReplyLost()
        return [r for r in results if r is not None]

    def _draw(self, requests: Sequence[PayoutRequest], firsts: dict[str, int], now: float) -> _BatchDraw:
        """Capacity, transient errors and the outcome per first occurrence of an order id."""
        draw = _BatchDraw()
        for order_id, index in firsts.items():
            request = requests[index]
            faults = self.faults[request.channel]
            draw.latency_s = max(draw.latency_s, faults.latency_s(self.rng))
            # Admitted before knowing whether the order is new (that is the one read this
            # saves); a slot taken by a recorded order or an unbound method is given back.
            if not self.windows[request.channel].admit(faults.capacity_per_second, now):
                draw.refused[order_id] = CapacityExceeded(request.channel, faults.capacity_per_second)
                continue
            draw.admitted.add(order_id)
            if faults.transient(self.rng):
                draw.refused[order_id] = TransientError(request.channel)
                continue
            draw.to_insert.append(NewPayout(request, faults.decide(self.rng), faults.async_delay_ms))
        return draw

    async def _first_answer(self, request: PayoutRequest, draw: _BatchDraw, created: dict[str, Payout],
                            recorded: dict[str, Payout], now: float) -> BatchOutcome:
        order_id = request.order_id
        with log_context(order_id=order_id, uid=request.uid):
            if order_id in created:
                payout = created[order_id]
                log.debug("payout recorded: %s %s fen via %s", payout.state.value, payout.amount_fen,
                          payout.channel)
                return payout, False
            if order_id in recorded:
                # Answered from its record whatever the dice said, as payout() does.
                if order_id in draw.admitted:
                    self.windows[request.channel].release(now)
                return await self._replay(recorded[order_id], request)
            if order_id in draw.refused:
                return draw.refused[order_id]
            # Admitted and drawn to be recorded: the join found no bound method.
            self.windows[request.channel].release(now)
            return MethodNotBound(request.method_id)

    async def _replay(self, payout: Payout, request: PayoutRequest) -> BatchOutcome:
        if not payout.same_content(request):
            return PayoutConflict(request.order_id)
        return await self._finalize_if_due(payout), True

    async def query_payout(self, order_id: str) -> Payout:
        check_id("order_id", order_id)
        payout = await self.repo.get_payout(order_id)
        if payout is None:
            raise PayoutNotFound(order_id)
        return await self._finalize_if_due(payout)

    async def query_payouts(self, order_ids: list[str]) -> tuple[list[Payout], list[str]]:
        """(payouts found, order ids without one), both in request order, each id once.
        One statement reads them all; only when some are still PROCESSING does a second one
        finalize those whose completion time passed, as QueryPayout does."""
        ids = distinct_order_ids(order_ids)
        found = await self.repo.get_payouts(ids) if ids else {}
        due = [p.order_id for p in found.values() if p.state is PayoutState.PROCESSING]
        if due:
            found.update((p.order_id, p) for p in await self.repo.complete_due(due, limit=len(due)))
        return [found[i] for i in ids if i in found], [i for i in ids if i not in found]

    async def list_payouts(
        self, start: datetime | None, end: datetime | None, token: str, size: int
    ) -> tuple[list[Payout], str]:
        limit = page_size(size)
        after = decode_page_token(token)
        if start is not None and end is not None and end < start:
            raise InvalidArgument("end_time: must not be before start_time", reason="BAD_RANGE")
        await self.complete_due()
        payouts = await self.repo.list_payouts(start, end, after, limit)
        next_token = ""
        if len(payouts) == limit:
            last = payouts[-1]
            next_token = encode_page_token(last.created_at, last.order_id)
        return payouts, next_token

    async def complete_due(self) -> int:
        """Finalize every asynchronous payout whose completion time passed."""
        total = 0
        while True:
            done = await self.repo.complete_due()
            total += len(done)
            if len(done) < 500:
                return total

    async def _finalize_if_due(self, payout: Payout) -> Payout:
        if payout.state is not PayoutState.PROCESSING:
            return payout
        done = await self.repo.complete_due([payout.order_id])
        if done:
            return done[0]
        # Not due yet, or finalized by someone else meanwhile: read what is stored.
        return await self.repo.get_payout(payout.order_id) or payout

    # -- methods ---------------------------------------------------------------------------

    async def bind_method(self, uid: int, channel: str, account: str, method_id: str) -> Method:
        validate_bind(uid, channel, account, method_id, self.channels)
        wanted = Method(method_id or f"m-{uuid.uuid4().hex[:20]}", uid, channel, mask_account(account))
        stored = await self.repo.insert_method(wanted)
        if stored != wanted:
            raise MethodConflict(wanted.method_id)
        # After the commit, and on a replayed bind too: a caller retrying a bind whose reply
        # (or whose bump, in a crash between the two) was lost bumps the version then.
        if self.method_events is not None:
            await self.method_events.bound(uid)
        return stored

    async def list_methods(self, uid: int, page_size: int, page_token: str) -> tuple[list[Method], str]:
        check_uid(uid)
        size = METHODS_PAGE.of(page_size)
        page = await self.repo.list_methods(uid, size, paging.keyset_of(page_token))
        return page.methods, page.next_page_token

    # -- faults ----------------------------------------------------------------------------

    async def load_faults(self) -> None:
        for faults in await self.repo.load_faults():
            if faults.channel in self.faults:
                self.faults[faults.channel] = faults

    async def set_faults(self, faults: ChannelFaults, actor: str) -> ChannelFaults:
        faults.validate(self.channels)
        await self.repo.save_faults(faults, actor)
        self.faults[faults.channel] = faults
        log.info("channel %s faults set to %s by %s", faults.channel, faults.to_json(), actor)
        return faults

    async def admin_audit(self, page_size: int, page_token: str) -> tuple[list[AuditEntry], str]:
        return await self.repo.admin_audit(page_size, page_token)

    def get_faults(self, channel: str) -> ChannelFaults:
        check_channel(channel, self.channels)
        return self.faults[channel]
