"""Rules of the payment platform stand-in: what a valid payout request is, how injected
faults decide an outcome, and how a channel's capacity is counted. No I/O here."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from meshkit import paging, redact, validate
from meshkit.channels import check_channel
from meshkit.errors import Conflict, Exhausted, FailedPrecondition, InvalidArgument, NotFound, Unavailable

MAX_ID_LEN = 128
MAX_ACCOUNT_LEN = 64
MAX_BATCH = 500
# A user's bound methods per ListMethods page.
METHODS_PAGE = paging.PageSize(default=100, maximum=1000)
CLOSED_ACCOUNT = "account closed"


class PayoutState(StrEnum):
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class MethodNotBound(FailedPrecondition):
    def __init__(self, method_id: str) -> None:
        super().__init__(
            f"method_id: {method_id!r} is not bound to this uid on this channel", reason="METHOD_NOT_BOUND"
        )


class PayoutConflict(Conflict):
    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"order_id: {order_id!r} was paid before with different uid, channel, method or amount",
            reason="PAYOUT_CONFLICT",
        )


class MethodConflict(Conflict):
    def __init__(self, method_id: str) -> None:
        super().__init__(f"method_id: {method_id!r} is bound to another uid, channel or account",
                         reason="METHOD_CONFLICT")


class PayoutNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order_id: no payout for {order_id!r}", reason="PAYOUT_NOT_FOUND")


class CapacityExceeded(Exhausted):
    def __init__(self, channel: str, capacity: int) -> None:
        super().__init__(f"channel {channel!r} is at its capacity of {capacity} payouts/s; retry later",
                         reason="CHANNEL_CAPACITY")


class TransientError(Unavailable):
    def __init__(self, channel: str) -> None:
        super().__init__(f"channel {channel!r} is temporarily unavailable", reason="CHANNEL_UNAVAILABLE")


class ReplyLost(Unavailable):
    """Raised after the payout committed: the caller cannot tell it from a network failure."""

    def __init__(self) -> None:
        super().__init__("reply lost", reason="REPLY_LOST")


@dataclass(frozen=True)
class PayoutRequest:
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int

    def validate(self, channels: tuple[str, ...]) -> None:
        check_id("order_id", self.order_id)
        check_uid(self.uid)
        check_channel(self.channel, channels)
        check_id("method_id", self.method_id)
        validate.positive("amount_fen", self.amount_fen, reason="BAD_AMOUNT")


@dataclass(frozen=True)
class Payout:
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int
    state: PayoutState
    failure_reason: str
    requested_at: datetime
    created_at: datetime
    completed_at: datetime | None

    def same_content(self, request: PayoutRequest) -> bool:
        return (self.uid, self.channel, self.method_id, self.amount_fen) == (
            request.uid, request.channel, request.method_id, request.amount_fen)

    def feed_payload(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id, "uid": self.uid, "channel": self.channel,
            "method_id": self.method_id, "amount_fen": self.amount_fen,
            "state": self.state.value, "failure_reason": self.failure_reason,
        }


@dataclass(frozen=True)
class Method:
    method_id: str
    uid: int
    channel: str
    account_masked: str


@dataclass(frozen=True)
class Decision:
    """What the dice said for a new payout."""

    state: PayoutState
    failure_reason: str = ""
    async_outcome: PayoutState | None = None
    async_reason: str = ""


@dataclass(frozen=True)
class ChannelFaults:
    channel: str
    capacity_per_second: int = 0
    latency_min_ms: int = 0
    latency_max_ms: int = 0
    transient_error_rate: float = 0.0
    definitive_failure_rate: float = 0.0
    async_rate: float = 0.0
    async_delay_ms: int = 0
    lost_reply_rate: float = 0.0
    async_failure_rate: float = 0.0

    def validate(self, channels: tuple[str, ...]) -> None:
        check_channel(self.channel, channels)
        for name in ("capacity_per_second", "latency_min_ms", "latency_max_ms", "async_delay_ms"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name}: must be >= 0", reason="BAD_FAULTS")
        if self.latency_min_ms > self.latency_max_ms:
            raise InvalidArgument("latency_min_ms: must be <= latency_max_ms", reason="BAD_FAULTS")
        for name in ("transient_error_rate", "definitive_failure_rate", "async_rate",
                     "lost_reply_rate", "async_failure_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"{name}: must be between 0 and 1", reason="BAD_FAULTS")
        if self.definitive_failure_rate + self.async_rate > 1.0:
            raise InvalidArgument("definitive_failure_rate + async_rate: must be <= 1", reason="BAD_FAULTS")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("channel")
        return data

    @classmethod
    def from_json(cls, channel: str, data: dict[str, Any]) -> ChannelFaults:
        known = {f.name for f in fields(cls)} - {"channel"}
        return cls(channel=channel, **{k: v for k, v in data.items() if k in known})

    def latency_s(self, rng: random.Random) -> float:
        if self.latency_max_ms <= 0:
            return 0.0
        return rng.uniform(self.latency_min_ms, self.latency_max_ms) / 1000.0

    def transient(self, rng: random.Random) -> bool:
        return self.transient_error_rate > 0 and rng.random() < self.transient_error_rate

    def reply_lost(self, rng: random.Random) -> bool:
        return self.lost_reply_rate > 0 and rng.random() < self.lost_reply_rate

    def decide(self, rng: random.Random) -> Decision:
        draw = rng.random()
        if draw < self.definitive_failure_rate:
            return Decision(PayoutState.FAILED, CLOSED_ACCOUNT)
        if draw < self.definitive_failure_rate + self.async_rate:
            if rng.random() < self.async_failure_rate:
                return Decision(PayoutState.PROCESSING, "", PayoutState.FAILED, CLOSED_ACCOUNT)
            return Decision(PayoutState.PROCESSING, "", PayoutState.SUCCEEDED, "")
        return Decision(PayoutState.SUCCEEDED)


class CapacityWindow:
    """Admitted calls of one channel in the last second (sliding window). In-process: the
    mock is one process per deployment, and a real platform counts on its own side too."""

    def __init__(self) -> None:
        self._admitted: deque[float] = deque()

    def admit(self, capacity: int, now: float) -> bool:
        if capacity <= 0:
            return True
        while self._admitted and self._admitted[0] <= now - 1.0:
            self._admitted.popleft()
        if len(self._admitted) >= capacity:
            return False
        self._admitted.append(now)
        return True

    def release(self, admitted_at: float) -> None:
        """Give back a slot admit() granted at `admitted_at` to a call that turned out to
        need none (an order already recorded, a method not bound)."""
        try:
            self._admitted.remove(admitted_at)
        except ValueError:
            pass  # already out of the window


def check_id(name: str, value: str) -> None:
    validate.identifier(name, value, max_len=MAX_ID_LEN)


def check_uid(uid: int) -> None:
    validate.positive("uid", uid, reason="BAD_UID")


def mask_account(account: str) -> str:
    """Only the last four characters are ever shown (and never all of a short account)."""
    return redact.account(account)


def validate_bind(uid: int, channel: str, account: str, method_id: str, channels: tuple[str, ...]) -> None:
    check_uid(uid)
    check_channel(channel, channels)
    validate.text("account", account, max_len=MAX_ACCOUNT_LEN, required=True)
    validate.identifier("method_id", method_id, max_len=MAX_ID_LEN, required=False)


def page_size(requested: int) -> int:
    return paging.BULK_LIST.of(requested)


def encode_page_token(created_at: datetime, order_id: str) -> str:
    return paging.keyset_token(created_at, order_id)


def decode_page_token(token: str) -> tuple[datetime, str] | None:
    return paging.keyset_of(token, key_max_len=MAX_ID_LEN)


MAX_QUERY_BATCH = 1000


def distinct_order_ids(order_ids: list[str]) -> list[str]:
    """The order ids of a batch query, validated, each once in first-seen order."""
    if len(order_ids) > MAX_QUERY_BATCH:
        raise InvalidArgument(f"order_ids: at most {MAX_QUERY_BATCH} per call, got {len(order_ids)}",
                              reason="TOO_MANY_ORDER_IDS")
    for index, order_id in enumerate(order_ids):
        check_id(f"order_ids[{index}]", order_id)
    return list(dict.fromkeys(order_ids))
