"""Pure ledger rules: request validation, replays, and how a credit batch is planned."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from account_svc import domain
from account_svc.domain import CreditOutcome, Entry, Kind, StoredCredit
from campaign.tokens import RewardGrant
from meshkit.errors import Code, DomainError


def g(reward_id: str, uid: int, amount: int, source: str = "red_packet") -> RewardGrant:
    return RewardGrant(reward_id, uid, amount, source, 1_800_000_000)


def entry(kind: Kind, *, uid: int | None = 7, amount: int = 100) -> Entry:
    return Entry(1, uid, kind, amount, None, None, "o-1", None,
                 None if kind is Kind.VOID else 0, datetime.now(UTC))


@pytest.mark.parametrize(("args", "field"), [
    (("", 1, 1), "order_id"), (("x" * 65, 1, 1), "order_id"), (("a b", 1, 1), "order_id"),
    (("o\n", 1, 1), "order_id"), (("o", 0, 1), "uid"), (("o", -3, 1), "uid"),
    (("o", 1, 0), "amount_fen"), (("o", 1, -100), "amount_fen"),
])
def test_deduct_validation_names_the_field(args: tuple[str, int, int], field: str) -> None:
    with pytest.raises(DomainError) as info:
        domain.validate_deduct(*args)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.message.startswith(field)


def test_deduct_validation_accepts_the_limits() -> None:
    domain.validate_deduct("o" * 64, 1, 1)


def test_force_credit_validation() -> None:
    domain.validate_force_credit(1, [])
    with pytest.raises(DomainError, match=r"^uid"):
        domain.validate_force_credit(0, [])
    with pytest.raises(DomainError, match=r"^tokens"):
        domain.validate_force_credit(1, ["t"] * (domain.MAX_FORCE_TOKENS + 1))


def test_page_of() -> None:
    assert domain.page_of(0, "") == (20, domain.INT64_MAX)
    assert domain.page_of(500, "") == (200, domain.INT64_MAX)
    assert domain.page_of(5, "123") == (5, 123)
    for size, token, field in [(-1, "", "page_size"), (5, "abc", "page_token"), (5, "0", "page_token"),
                               (5, "9" * 30, "page_token")]:
        with pytest.raises(DomainError) as info:
            domain.page_of(size, token)
        assert info.value.code is Code.INVALID_ARGUMENT and info.value.message.startswith(field)


def test_replay_of_debit() -> None:
    debit = entry(Kind.DEBIT)
    assert domain.replay_of_debit(debit, "o-1", 7, 100) is debit
    with pytest.raises(DomainError) as conflict:
        domain.replay_of_debit(debit, "o-1", 7, 101)
    assert conflict.value.code is Code.ALREADY_EXISTS
    with pytest.raises(DomainError) as other_user:
        domain.replay_of_debit(debit, "o-1", 8, 100)
    assert other_user.value.code is Code.ALREADY_EXISTS
    with pytest.raises(DomainError) as voided:
        domain.replay_of_debit(entry(Kind.VOID, uid=None, amount=0), "o-1", 7, 100)
    assert voided.value.code is Code.FAILED_PRECONDITION and voided.value.reason == "ORDER_VOIDED"


def test_insufficient_names_both_amounts() -> None:
    err = domain.insufficient(50, 100)
    assert err.code is Code.FAILED_PRECONDITION
    assert "balance 50 fen is less than 100 fen" in err.message


def test_plan_writes_in_uid_then_reward_order() -> None:
    grants = [g("r3", 2, 30), g("r1", 1, 10), g("r2", 2, 20), g("r4", 1, 5)]
    plan = domain.plan_credits(grants, {})
    assert plan.outcomes == [CreditOutcome.CREDITED] * 4
    assert [x.reward_id for x in plan.fresh] == ["r1", "r4", "r2", "r3"]
    assert plan.conflicts == []


def test_plan_skips_stored_and_flags_conflicts() -> None:
    stored = {
        "r1": StoredCredit("r1", 1, 10, "red_packet"),
        "r2": StoredCredit("r2", 1, 99, "red_packet"),
        "r3": StoredCredit("r3", 1, 10, "card_draw"),
    }
    plan = domain.plan_credits([g("r1", 1, 10), g("r2", 1, 10), g("r3", 1, 10), g("r5", 1, 7)], stored)
    assert plan.outcomes == [CreditOutcome.ALREADY_CREDITED, CreditOutcome.CONFLICT,
                             CreditOutcome.CONFLICT, CreditOutcome.CREDITED]
    assert plan.conflicts == [1, 2]
    assert "amount_fen 99" in plan.messages[1] and "amount_fen 10" in plan.messages[1]
    assert [x.reward_id for x in plan.fresh] == ["r5"]


def test_plan_same_reward_twice_in_one_batch_is_credited_once() -> None:
    plan = domain.plan_credits([g("r1", 1, 10), g("r1", 1, 10), g("r1", 1, 11)], {})
    assert plan.outcomes == [CreditOutcome.CREDITED, CreditOutcome.ALREADY_CREDITED,
                             CreditOutcome.CONFLICT]
    assert plan.fresh == [g("r1", 1, 10)]


async def test_unreachable_database_answers_unavailable() -> None:
    from account_svc.service import store_down_is_unavailable

    @store_down_is_unavailable
    async def call() -> int:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(DomainError) as info:
        await call()
    assert info.value.code is Code.UNAVAILABLE and "retry" in info.value.message
