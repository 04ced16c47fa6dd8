"""Rules of the payout queues: what a job is, what the worker may do in each order state,
how gateway answers are adopted, when a message is retried or dead-lettered. No I/O."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from meshkit.errors import InvalidArgument

MAX_BACKOFF_S = 5.0
DEFAULT_DLQ_PAGE = 100
MAX_DLQ_PAGE = 1000
_ENTRY_ID = re.compile(r"^\d+-\d+$")


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
class ChannelStats:
    channel: str
    backlog: int
    pending: int
    consumers: int
    rate_limit_per_second: float
    current_rate_per_second: float
    dead_letters: int


class AttemptFailed(Exception):
    """This delivery did not settle the order; counts as one failed attempt."""


class DependencyDown(Exception):
    """withdraw_svc (the coordinator), the gateway or Redis did not answer: not the
    message's fault. The message is left un-acked and redelivered; no attempt is counted."""


class OrderMissing(Exception):
    """withdraw_svc has no such order."""


class SettleConflict(Exception):
    """withdraw_svc already settled the order the other way."""


class UnknownChannel(InvalidArgument):
    def __init__(self, channel: str) -> None:
        super().__init__(f"channel: unknown channel {channel!r}", reason="UNKNOWN_CHANNEL")


def check_channel(channel: str, channels: tuple[str, ...]) -> None:
    if channel not in channels:
        raise UnknownChannel(channel)


def validate_rate(rate: float) -> None:
    if not math.isfinite(rate) or rate < 0:
        raise InvalidArgument("rate_per_second: must be a finite number >= 0 (0: unlimited)",
                              reason="BAD_RATE")


def check_dead_letter_ids(ids: list[str]) -> None:
    for entry_id in ids:
        if not _ENTRY_ID.match(entry_id):
            raise InvalidArgument(f"dead_letter_ids: {entry_id!r} is not a stream entry id",
                                  reason="BAD_DEAD_LETTER_ID")


def dlq_page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size: must be >= 0", reason="BAD_PAGE_SIZE")
    return min(requested or DEFAULT_DLQ_PAGE, MAX_DLQ_PAGE)


def parse_rates(text: str) -> dict[str, float]:
    """"bank:2000,alipay:5000" -> {"bank": 2000.0, "alipay": 5000.0}."""
    rates: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        channel, sep, value = part.partition(":")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not channel.strip() or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"bad rate {part!r}; expected channel:per_second")
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
