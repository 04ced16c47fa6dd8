"""Use cases of the payment platform stand-in."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from gateway_mock.domain import (
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
    check_channel,
    check_id,
    check_uid,
    decode_page_token,
    distinct_order_ids,
    encode_page_token,
    mask_account,
    page_size,
    validate_bind,
)
from gateway_mock.repository import Repository
from meshkit.errors import InvalidArgument
from meshkit.logs import log_context
from meshkit.timeconv import utcnow

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class GatewayService:
    def __init__(
        self,
        repo: Repository,
        channels: tuple[str, ...],
        rng: random.Random,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.repo = repo
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
            payout, created = await self.repo.insert_payout(
                request, faults.decide(self.rng), faults.async_delay_ms, requested_at)
            if not created:
                if not payout.same_content(request):
                    raise PayoutConflict(request.order_id)
                payout = await self._finalize_if_due(payout)
            else:
                log.info("payout recorded: %s %s fen via %s",
                         payout.state.value, payout.amount_fen, payout.channel)
            await self.sleep(latency / 2)
            if faults.reply_lost(self.rng):
                log.info("payout committed, reply dropped on purpose (lost reply fault)")
                raise ReplyLost()
            return payout, not created

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
        found = {p.order_id: p for p in await self.repo.get_payouts(ids)} if ids else {}
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
        return stored

    async def list_methods(self, uid: int) -> list[Method]:
        check_uid(uid)
        return await self.repo.list_methods(uid)

    # -- faults ----------------------------------------------------------------------------

    async def load_faults(self) -> None:
        for faults in await self.repo.load_faults():
            if faults.channel in self.faults:
                self.faults[faults.channel] = faults

    async def set_faults(self, faults: ChannelFaults) -> ChannelFaults:
        faults.validate(self.channels)
        await self.repo.save_faults(faults)
        self.faults[faults.channel] = faults
        log.info("channel %s faults set to %s", faults.channel, faults.to_json())
        return faults

    def get_faults(self, channel: str) -> ChannelFaults:
        check_channel(channel, self.channels)
        return self.faults[channel]
