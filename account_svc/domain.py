"""Ledger rules: what a valid request is, what a replay must match, and how a batch of
rewards turns into entries. No I/O here."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from campaign.tokens import RewardGrant
from meshkit import paging, validate
from meshkit.errors import Conflict, FailedPrecondition, InvalidArgument

MAX_ORDER_ID_LEN = validate.MAX_ORDER_ID_LEN
MAX_FORCE_TOKENS = 500
MAX_DEDUCT_BATCH = 1000
INT64_MAX = validate.INT64_MAX


class Kind(StrEnum):
    CREDIT = "CREDIT"
    DEBIT = "DEBIT"
    REFUND = "REFUND"
    VOID = "VOID"


class CreditOutcome(StrEnum):
    CREDITED = "CREDITED"
    ALREADY_CREDITED = "ALREADY_CREDITED"
    # The reward id is already credited (or earlier in the same batch) with other content.
    CONFLICT = "CONFLICT"


def refund_refusal(order_id: str, order_state: str | None) -> FailedPrecondition | None:
    """A refund (or void) follows only an order withdraw_svc itself holds FAILED: one that
    was paid, is being paid or may still be paid must never get its money back as well.
    `order_state` is withdraw_svc's answer (None: no such order). None when allowed."""
    if order_state == "FAILED":
        return None
    if order_state is None:
        return FailedPrecondition(f"order {order_id} is unknown to withdraw_svc; nothing to refund",
                                  reason="ORDER_UNKNOWN")
    return FailedPrecondition(
        f"order {order_id} is {order_state} in withdraw_svc; only a FAILED order is refunded",
        reason="ORDER_NOT_FAILED",
    )


class RefundOutcome(StrEnum):
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"


@dataclass(frozen=True)
class Entry:
    entry_id: int
    uid: int | None
    kind: Kind
    amount_fen: int
    reward_id: str | None
    source: str | None
    order_id: str | None
    refund_of: int | None
    balance_after_fen: int | None
    created_at: datetime


@dataclass(frozen=True)
class StoredCredit:
    """What the ledger holds for a reward id already credited."""

    reward_id: str
    uid: int
    amount_fen: int
    source: str


# --- validation -------------------------------------------------------------------------


def validate_uid(uid: int, field: str = "uid") -> None:
    validate.positive(field, uid, reason="BAD_UID")


def validate_order_id(order_id: str) -> None:
    validate.identifier("order_id", order_id, max_len=MAX_ORDER_ID_LEN)


def validate_deduct(order_id: str, uid: int, amount_fen: int) -> None:
    validate_order_id(order_id)
    validate_uid(uid)
    validate.positive("amount_fen", amount_fen, reason="BAD_AMOUNT")


def validate_deduct_batch(size: int) -> None:
    if size > MAX_DEDUCT_BATCH:
        raise validate.invalid("deducts", f"at most {MAX_DEDUCT_BATCH} per call, got {size}",
                               reason="TOO_MANY_DEDUCTS")


def validate_force_credit(uid: int, tokens: Sequence[str]) -> None:
    validate_uid(uid)
    validate.count("tokens", tokens, MAX_FORCE_TOKENS, reason="TOO_MANY_TOKENS")


def page_of(page_size: int, page_token: str) -> tuple[int, int]:
    """(limit, entry ids below which to read) from a ListEntries request."""
    limit = paging.PERSON_LIST.of(page_size)
    below = paging.row_of(page_token)
    return limit, INT64_MAX if below is None else below


# --- debits, refunds ----------------------------------------------------------------------


def replay_of_debit(prior: Entry, order_id: str, uid: int, amount_fen: int) -> Entry:
    """The answer to a Deduct whose order id already has a debit or a void."""
    if prior.kind is Kind.VOID:
        raise FailedPrecondition(
            f"order_id {order_id} was voided by a refund and can no longer be debited",
            reason="ORDER_VOIDED",
        )
    if prior.uid != uid or prior.amount_fen != amount_fen:
        raise Conflict(
            f"order_id {order_id} was already debited with uid {prior.uid} amount_fen "
            f"{prior.amount_fen}, not uid {uid} amount_fen {amount_fen}",
            reason="ORDER_ID_REUSED",
        )
    return prior


def insufficient(balance_fen: int, amount_fen: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"insufficient balance: balance {balance_fen} fen is less than {amount_fen} fen",
        reason="INSUFFICIENT_BALANCE",
    )


# --- credits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditPlan:
    """Per input grant, its outcome (CREDITED = to be written now) and a conflict message;
    plus the grants to write, one per reward id, ordered by (uid, reward_id): the order in
    which every writer locks accounts, so concurrent credits queue instead of deadlocking,
    and the order of their entries (and running balances) within each account."""

    outcomes: list[CreditOutcome]
    messages: list[str]
    fresh: list[RewardGrant]

    @property
    def conflicts(self) -> list[int]:
        return [i for i, outcome in enumerate(self.outcomes) if outcome is CreditOutcome.CONFLICT]


def _same(grant: RewardGrant, uid: int, amount_fen: int, source: str) -> bool:
    return grant.uid == uid and grant.amount_fen == amount_fen and grant.source == source


def _conflict_message(reward_id: str, uid: int, amount_fen: int, source: str, grant: RewardGrant) -> str:
    return (
        f"reward_id {reward_id} was already credited as uid {uid} amount_fen {amount_fen} "
        f"source {source}; this token says uid {grant.uid} amount_fen {grant.amount_fen} "
        f"source {grant.source}"
    )


_UID_THEN_REWARD_ID = operator.itemgetter(1, 0)


def plan_credits(grants: Sequence[RewardGrant], stored: Mapping[str, StoredCredit]) -> CreditPlan:
    """Outcomes of crediting `grants` when `stored` holds the reward ids already credited.
    A reward id twice in `grants` is credited once, by its first occurrence."""
    outcomes: list[CreditOutcome] = []
    messages: list[str] = []
    fresh: dict[str, RewardGrant] = {}
    for grant in grants:
        prior = stored.get(grant.reward_id)
        if prior is not None:
            ok = _same(grant, prior.uid, prior.amount_fen, prior.source)
            outcomes.append(CreditOutcome.ALREADY_CREDITED if ok else CreditOutcome.CONFLICT)
            messages.append("" if ok else _conflict_message(
                grant.reward_id, prior.uid, prior.amount_fen, prior.source, grant))
            continue
        first = fresh.get(grant.reward_id)
        if first is not None:
            ok = _same(grant, first.uid, first.amount_fen, first.source)
            outcomes.append(CreditOutcome.ALREADY_CREDITED if ok else CreditOutcome.CONFLICT)
            messages.append("" if ok else _conflict_message(
                grant.reward_id, first.uid, first.amount_fen, first.source, grant))
            continue
        fresh[grant.reward_id] = grant
        outcomes.append(CreditOutcome.CREDITED)
        messages.append("")
    # itemgetter: (uid, reward_id) of a RewardGrant tuple, without a Python call per grant.
    return CreditPlan(outcomes, messages, sorted(fresh.values(), key=_UID_THEN_REWARD_ID))


# --- batch queries ------------------------------------------------------------------------

MAX_ORDER_QUERY_BATCH = 1000


def distinct_order_ids(order_ids: Sequence[str]) -> list[str]:
    """The order ids of a batch query, validated, each once in first-seen order. One bad id
    refuses the whole call, naming its position."""
    if len(order_ids) > MAX_ORDER_QUERY_BATCH:
        raise InvalidArgument(
            f"order_ids: at most {MAX_ORDER_QUERY_BATCH} per call, got {len(order_ids)}",
            reason="TOO_MANY_ORDER_IDS",
        )
    for index, order_id in enumerate(order_ids):
        validate.identifier(f"order_ids[{index}]", order_id, max_len=MAX_ORDER_ID_LEN)
    return list(dict.fromkeys(order_ids))
