"""The bound-methods cache: the page uses the Redis copy only while its methods version is
current, a bind (version bump) sends the next page to the gateway, confirm trusts hits and
asks the gateway on a miss, and the page renders a stale copy when the gateway is away."""

from __future__ import annotations

import asyncio

import pytest

from meshkit.errors import DomainError
from tests.unit.withdraw_fakes import FakeMethods
from withdraw_svc.bound_methods import BoundMethods
from withdraw_svc.domain import Limits
from withdraw_svc.peers import CachedMethods, Method

UID = 42
LIMITS = Limits(min_fen=100, max_fen=1_000_000, channels=("bank", "alipay"))
BANK = Method("m-bank", "bank", "Bank ****1")
ALIPAY = Method("m-ali", "alipay", "Alipay ****2")


def replica(source: FakeMethods) -> BoundMethods:
    """One withdraw_svc replica; several share `source` as they share the gateway and Redis."""
    return BoundMethods(source, source, LIMITS, cache_s=300, page_deadline_s=1.0)


async def test_a_second_view_is_served_from_the_copy_without_asking_the_gateway() -> None:
    source = FakeMethods({UID: [BANK]})
    page = replica(source)
    assert await page.for_page(UID) == ([BANK], False)
    assert await page.for_page(UID) == ([BANK], False)
    assert source.asked == 1


async def test_after_a_bind_every_replica_shows_the_new_method_on_its_next_view() -> None:
    source = FakeMethods({UID: [BANK]})
    a, b = replica(source), replica(source)
    assert await a.for_page(UID) == ([BANK], False)
    assert await b.for_page(UID) == ([BANK], False)
    source.bind(UID, ALIPAY)
    assert await b.for_page(UID) == ([BANK, ALIPAY], False)
    assert await a.for_page(UID) == ([BANK, ALIPAY], False)


async def test_a_copy_is_never_used_after_a_bump_it_was_not_tagged_with() -> None:
    source = FakeMethods({UID: [BANK]})
    # A list read under version 0, written after the bind bumped to 1 (a slow replica whose
    # gateway call answered before the bind committed): tagged 0, so never used under 1.
    source.bind(UID, ALIPAY)
    source.cache[UID] = CachedMethods("0", [BANK])
    assert await replica(source).for_page(UID) == ([BANK, ALIPAY], False)
    assert source.cache[UID] == CachedMethods("1", [BANK, ALIPAY])


async def test_a_bind_during_the_gateway_call_leaves_the_list_tagged_with_the_older_version() -> None:
    source = FakeMethods({UID: [BANK]})
    original = source.methods

    async def bind_while_asked(uid: int, timeout_s: float | None = None) -> list[Method]:
        listed = await original(uid, timeout_s)  # the gateway answers before the bind commits
        source.bind(UID, ALIPAY)
        return listed

    source.methods = bind_while_asked  # type: ignore[method-assign]
    page = replica(source)
    assert await page.for_page(UID) == ([BANK], False)
    assert source.cache[UID].version == "0"
    source.methods = original  # type: ignore[method-assign]
    assert await page.for_page(UID) == ([BANK, ALIPAY], False)


async def test_gateway_away_the_page_renders_the_last_copy_marked_stale() -> None:
    source = FakeMethods({UID: [BANK]})
    page = replica(source)
    await page.for_page(UID)
    source.bind(UID, ALIPAY)
    source.away = True
    assert await page.for_page(UID) == ([BANK], True)
    assert await page.for_page(UID + 1) == ([], True)


async def test_confirm_accepts_a_method_bound_after_the_list_was_cached() -> None:
    source = FakeMethods({UID: [BANK]})
    bound = replica(source)
    assert await bound.channel_of(UID, "m-bank") == "bank"
    asked = source.asked
    assert await bound.channel_of(UID, "m-bank") == "bank"
    assert source.asked == asked  # a hit: nobody asked
    # Bound at the gateway; even with the version bump lost, the miss asks the gateway.
    source.bound[UID].append(ALIPAY)
    assert await bound.channel_of(UID, "m-ali") == "alipay"
    assert source.asked == asked + 1


async def test_confirm_refuses_a_method_the_gateway_does_not_know() -> None:
    source = FakeMethods({UID: [BANK]})
    with pytest.raises(DomainError) as err:
        await replica(source).channel_of(UID, "m-nope")
    assert err.value.reason == "METHOD_NOT_BOUND"


async def test_confirm_with_the_gateway_away_and_no_copy_is_retryable() -> None:
    source = FakeMethods({UID: [BANK]})
    source.away = True
    with pytest.raises(DomainError) as err:
        await replica(source).channel_of(UID, "m-bank")
    assert err.value.code.name == "UNAVAILABLE" and err.value.reason == "METHODS_UNAVAILABLE"


class HangingCache(FakeMethods):
    """Redis that never answers the read."""

    async def methods_with_version(self, uid: int) -> tuple[str, CachedMethods | None]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_a_redis_read_that_hangs_does_not_hold_the_page_it_asks_the_gateway() -> None:
    source = HangingCache({UID: [BANK]})
    page = BoundMethods(source, source, LIMITS, cache_s=300, page_deadline_s=0.05)
    assert await page.for_page(UID) == ([BANK], False)
    assert source.asked == 1 and source.cache == {}  # no version read: nothing cached
