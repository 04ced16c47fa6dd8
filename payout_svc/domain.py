"""Rules of the payout queues: what a job is, what the worker may do in each order state,
how gateway answers are adopted, when a message is retried or dead-lettered. No I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from meshkit import paging, validate
from meshkit.errors import InvalidArgument

MAX_BACKOFF_S = 5.0
_MAX_ENTRY_ID_LEN = 41  # two uint64 and a dash


class OrderState(StrEnum):
    PENDING_DEDUCT = "PENDING_DEDUCT"
    PENDING_PAYOUT = "PENDING_PAYOUT"
    PAYING = "PAYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (OrderState.SUCCEEDED, OrderState.FAILED)


class GatewayStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"      # paid: cannot be recalled
    FAILED = "FAILED"            # definitively not paid
    PROCESSING = "PROCESSING"    # accepted, final state later
    NOT_FOUND = "NOT_FOUND"      # the gateway has no record of the order (query only)
    UNKNOWN = "UNKNOWN"          # timeout or unavailable: it may or may not have paid
    BUSY = "BUSY"                # channel capacity exceeded: nothing recorded, pace and retry
    REFUSED = "REFUSED"          # refused the request (bad input, conflict): nothing paid by this call
    AWAY = "AWAY"                # one item of a batch answered "temporarily unavailable": nothing recorded


class Handled(StrEnum):
    """What became of one stream message."""

    ACKED = "ACKED"            # the order's outcome is settled (or nothing was left to do)
    PARKED = "PARKED"          # gateway accepted asynchronously; the awaiting poller follows up
    RETRIED = "RETRIED"        # failed attempt: a copy with attempt+1 replaced it
    DEAD = "DEAD"              # attempts exhausted: moved to the dead-letter stream
    LEFT = "LEFT"              # left un-acked on purpose: redelivered later, no attempt counted


@dataclass(frozen=True)
class Job:
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int
    attempt: int = 0
    enqueue_time: datetime | None = None
    last_error: str = ""

    def next_attempt(self, error: str) -> Job:
        return replace(self, attempt=self.attempt + 1, last_error=error[:500])


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker."""

    channel: str
    entry_id: str
    job: Job | None        # None when the entry holds no readable job
    raw_job: bytes
    traceparent: str


@dataclass(frozen=True)
class Order:
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int
    state: OrderState
    failure_reason: str = ""

    def as_job(self) -> Job:
        return Job(self.order_id, self.uid, self.channel, self.method_id, self.amount_fen)


@dataclass(frozen=True)
class Begun:
    order: Order
    acquired: bool


@dataclass(frozen=True)
class GatewayAnswer:
    status: GatewayStatus
    reason: str = ""

    @property
    def final(self) -> bool:
        return self.status in (GatewayStatus.SUCCEEDED, GatewayStatus.FAILED)


@dataclass(frozen=True)
class DeadLetter:
    dead_letter_id: str
    job: Job
    reason: str
    attempts: int
    dead_time: datetime | None


@dataclass(frozen=True)
class ChannelRate:
    """A channel's payout limit. No limit is only ever said explicitly (unlimited); no
    positive rate, or no configured rate at all, means the channel is paused."""

    per_second: float = 0.0
    unlimited: bool = False

    @property
    def paused(self) -> bool:
        return not self.unlimited and self.per_second <= 0

    def __str__(self) -> str:
        return "unlimited" if self.unlimited else "paused" if self.paused else f"{self.per_second:g}/s"


PAUSED = ChannelRate()
UNLIMITED = ChannelRate(unlimited=True)


@dataclass(frozen=True)
class GroupInfo:
    """Where the channel's consumer group stands."""

    backlog: int     # entries not yet delivered to any consumer
    pending: int     # delivered and not yet acknowledged
    consumers: int


@dataclass(frozen=True)
class ChannelStats:
    channel: str
    backlog: int
    pending: int
    consumers: int
    rate: ChannelRate
    current_rate_per_second: float
    dead_letters: int

    @property
    def rate_limit_per_second(self) -> float:
        return self.rate.per_second

    @property
    def unlimited(self) -> bool:
        return self.rate.unlimited

    @property
    def paused(self) -> bool:
        return self.rate.paused


class AttemptFailed(Exception):
    """This delivery did not settle the order; counts as one failed attempt."""


class DependencyDown(Exception):
    """withdraw_svc (the coordinator), the gateway or Redis did not answer: not the
    message's fault. The message is left un-acked and redelivered; no attempt is counted."""


class ChannelPaused(Exception):
    """The channel was paused while a worker held a message and the worker is stopping:
    the message is left un-acked for redelivery; no attempt is counted."""


class OrderMissing(Exception):
    """withdraw_svc has no such order."""


class SettleConflict(Exception):
    """withdraw_svc already settled the order the other way."""


def validate_rate(rate_per_second: float, unlimited: bool) -> ChannelRate:
    """The rate SetChannelRate asks for: a positive rate, or unlimited said explicitly."""
    if unlimited:
        if rate_per_second != 0:
            raise InvalidArgument("rate_per_second: leave it 0 when unlimited is true", reason="BAD_RATE")
        return UNLIMITED
    if not math.isfinite(rate_per_second) or rate_per_second <= 0:
        raise InvalidArgument("rate_per_second: must be a finite number > 0 (or set unlimited: true)",
                              reason="BAD_RATE")
    return ChannelRate(rate_per_second)


def check_dead_letter_ids(ids: list[str]) -> None:
    """Each id is a stream entry id "<ms>-<seq>", both parts within Redis's uint64."""
    for index, entry_id in enumerate(ids):
        field = f"dead_letter_ids[{index}]"
        ms, sep, seq = entry_id.partition("-")
        if len(entry_id) > _MAX_ENTRY_ID_LEN or not sep:
            raise validate.invalid(field, "malformed", reason="BAD_DEAD_LETTER_ID")
        validate.decimal(field, ms, 0, validate.UINT64_MAX, reason="BAD_DEAD_LETTER_ID")
        validate.decimal(field, seq, 0, validate.UINT64_MAX, reason="BAD_DEAD_LETTER_ID")


def dead_letter_token(letter: DeadLetter) -> str:
    """The page token after `letter`: its entry id, in meshkit.paging's one format."""
    return paging.encode(paging.Position(letter.dead_letter_id))


def dead_letter_after(page_token: str) -> str | None:
    """The entry id a dead-letter page token stands for (the last letter of the previous
    page), None for the first page; anything but a token of a stream entry id is
    "page_token: malformed"."""
    position = paging.decode(page_token, timed=False, key_max_len=_MAX_ENTRY_ID_LEN)
    if position is None:
        return None
    ms, sep, seq = position.key.partition("-")
    if not sep:
        raise validate.invalid("page_token", "malformed", reason="BAD_PAGE_TOKEN")
    validate.decimal("page_token", ms, 0, validate.UINT64_MAX, reason="BAD_PAGE_TOKEN")
    validate.decimal("page_token", seq, 0, validate.UINT64_MAX, reason="BAD_PAGE_TOKEN")
    return position.key


def dlq_page_size(requested: int) -> int:
    return paging.OPERATOR_LIST.of(requested)


def parse_rates(text: str) -> dict[str, ChannelRate]:
    """"bank:2000,alipay:unlimited,balance:0" -> bank at 2000/s, alipay unlimited, balance
    paused. A channel left out has no rate: paused too."""
    rates: dict[str, ChannelRate] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        channel, sep, value = part.partition(":")
        if value.strip() == "unlimited":
            rate = UNLIMITED
        else:
            try:
                per_second = float(value)
            except ValueError:
                per_second = -1.0
            if not math.isfinite(per_second) or per_second < 0:
                raise ValueError(f"bad rate {part!r}; expected channel:per_second or channel:unlimited")
            rate = ChannelRate(per_second)
        if not sep or not channel.strip():
            raise ValueError(f"bad rate {part!r}; expected channel:per_second or channel:unlimited")
        rates[channel.strip()] = rate
    return rates


def outage_backoff_s(previous_s: float, base_ms: int, max_ms: int) -> float:
    """Next pause while a dependency is away: from base, doubling, capped at max."""
    if previous_s <= 0:
        return base_ms / 1000.0
    return min(max_ms / 1000.0, previous_s * 2)


def retry_backoff_s(attempt: int, base_ms: int) -> float:
    """Delay before the copy of a failed attempt is queued: doubles per attempt, capped."""
    return min(MAX_BACKOFF_S, base_ms / 1000.0 * (2 ** max(0, attempt)))


def settle_result(answer: GatewayAnswer) -> tuple[OrderState, str]:
    """The order state a final gateway answer settles to. Only SUCCEEDED and FAILED are
    final: an unknown outcome is never a failure, since the money may have left."""
    if answer.status is GatewayStatus.SUCCEEDED:
        return OrderState.SUCCEEDED, ""
    if answer.status is GatewayStatus.FAILED:
        return OrderState.FAILED, answer.reason or "payout failed"
    raise ValueError(f"{answer.status} is not a final gateway answer")
