"""The typed records withdraw_svc's repositories return and its use cases read: plain
dataclasses, so nothing outside the adapters ever sees a database row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from withdraw_svc.domain import GateConfig, OrderState


@dataclass(frozen=True)
class NewOrder:
    order_id: str
    uid: int
    request_id: str
    amount_fen: int
    channel: str
    method_id: str


@dataclass(frozen=True)
class PayoutRow:
    outbox_id: int
    order_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class InFlightJob:
    """A published PAYOUT job whose order has not settled, as the sweep sees it."""

    outbox_id: int
    order_id: str
    channel: str
    stream_id: str
    published_at: datetime
    republished: int


@dataclass(frozen=True)
class PayoutJob:
    """Where an order's PAYOUT outbox job stands."""

    published: bool  # handed to the channel stream (stream_id is its entry)
    done: bool       # closed: the order settled (SUCCEEDED or FAILED)
    stream_id: str


@dataclass(frozen=True)
class RefundRow:
    outbox_id: int
    order_id: str
    attempts: int


@dataclass(frozen=True)
class RefundJob:
    """Where an order's REFUND outbox job stands."""

    outbox_id: int
    done: bool
    outcome: str      # REFUNDED or VOIDED once done
    attempts: int
    last_error: str


@dataclass(frozen=True)
class GateAuditEntry:
    actor: str
    at: datetime
    old: GateConfig | None
    new: GateConfig
    reason: str


@dataclass(frozen=True)
class GateAuditPage:
    entries: list[GateAuditEntry]
    next_page_token: str  # empty on the last page


@dataclass(frozen=True)
class StuckCount:
    state: OrderState
    older_than_s: int
    count: int
