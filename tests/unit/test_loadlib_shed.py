"""The load driver against a fake withdraw stub: calls the mesh sheds (RESOURCE_EXHAUSTED
with retry-after-ms) are counted as shed, not as errors; a shed confirm is retried after the
hint, with the same request id, and one shed to the end gives its budget back."""

from __future__ import annotations

from collections import deque
from typing import Any, cast

import grpc
import pytest

from mesh.withdraw.v1 import withdraw_pb2
from tools.loadlib.clients import MeshClients
from tools.loadlib.driver import Driver, DriverConfig, retry_after_s
from tools.loadlib.seeding import TestUser as SeededUser
from tools.loadlib.stats import SHED, Recorder


def shed_error(hint_ms: int = 1) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(),
                                grpc.aio.Metadata(("retry-after-ms", str(hint_ms))),
                                details=f"overloaded; retry after {hint_ms} ms")


def plain_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")


class FakeWithdraw:
    """Answers each call with the next scripted outcome (an error to raise, else OK)."""

    def __init__(self, script: list[grpc.aio.AioRpcError | None]) -> None:
        self.script = deque(script)
        self.request_ids: list[str] = []

    def _next(self) -> None:
        outcome = self.script.popleft() if self.script else None
        if outcome is not None:
            raise outcome

    async def ConfirmWithdraw(self, request: Any, **_: Any) -> withdraw_pb2.ConfirmWithdrawResponse:
        self.request_ids.append(request.request_id)
        self._next()
        order = withdraw_pb2.Order(order_id=f"o-{request.request_id}")
        return withdraw_pb2.ConfirmWithdrawResponse(order=order)

    async def GetWithdrawPage(self, request: Any, **_: Any) -> withdraw_pb2.GetWithdrawPageResponse:
        self._next()
        return withdraw_pb2.GetWithdrawPageResponse()


class FakeClients:
    metadata = ()

    def user_metadata(self, uid: int) -> tuple[tuple[str, str], ...]:
        return ()

    def __init__(self, withdraw: FakeWithdraw) -> None:
        self.withdraw = withdraw


def driver(script: list[grpc.aio.AioRpcError | None],
           **config: Any) -> tuple[Driver, FakeWithdraw, SeededUser]:
    stub = FakeWithdraw(script)
    user = SeededUser(uid=1, channel="bank", method_id="m", funded_fen=10_000, remaining_fen=10_000)
    cfg = DriverConfig(rate=0, duration_s=1, mix={"confirm": 1}, amount_min_fen=100, amount_max_fen=100,
                       **config)
    return Driver(cast(MeshClients, FakeClients(stub)), [user], cfg, Recorder()), stub, user


async def test_a_shed_confirm_is_retried_after_the_hint_with_the_same_request_id() -> None:
    d, stub, user = driver([shed_error(1), None], shed_retries=1)
    await d._do("confirm", 0.0)
    assert len(stub.request_ids) == 2 and len(set(stub.request_ids)) == 1
    assert d.recorder.all_codes["ConfirmWithdraw"] == {"OK": 1}
    assert user.remaining_fen == 9_900 and d.state.shed_confirms == 0


async def test_a_confirm_shed_to_the_end_is_refused_not_failed_and_takes_nothing() -> None:
    d, stub, user = driver([shed_error(1), shed_error(1)], shed_retries=1)
    await d._do("confirm", 0.0)
    assert len(stub.request_ids) == 2
    assert d.recorder.all_codes["ConfirmWithdraw"] == {SHED: 1}
    assert user.remaining_fen == 10_000
    assert d.state.shed_confirms == 1 and d.state.unanswered_confirms == 0
    summary = d.recorder.summary(1.0)["ConfirmWithdraw"]
    assert summary["shed"] == 1 and summary["shed_rate"] == 1.0
    assert summary["errors"] == {} and summary["error_rate"] == 0.0


async def test_a_shed_retry_of_an_unanswered_confirm_stays_in_doubt() -> None:
    d, _, user = driver([plain_error(grpc.StatusCode.DEADLINE_EXCEEDED), shed_error(1)],
                        confirm_retries=1, shed_retries=0)
    await d._do("confirm", 0.0)
    # The first attempt may have debited: its money is not given back.
    assert user.remaining_fen == 9_900 and d.state.unanswered_confirms == 1


async def test_shed_page_views_are_counted_apart_from_errors() -> None:
    d, _, _ = driver([shed_error(), plain_error(grpc.StatusCode.UNAVAILABLE), None])
    for _ in range(3):
        await d._do("page", 0.0)
    summary = d.recorder.summary(1.0)["GetWithdrawPage"]
    assert summary["calls"] == 3 and summary["shed"] == 1
    assert summary["errors"] == {"UNAVAILABLE": 1}
    assert summary["error_rate"] == pytest.approx(0.5)


def test_retry_after_is_bounded() -> None:
    assert retry_after_s(shed_error(250), 0.1, 1.0) == pytest.approx(0.25)
    assert retry_after_s(shed_error(60_000), 0.1, 1.0) == 1.0
    assert retry_after_s(plain_error(grpc.StatusCode.RESOURCE_EXHAUSTED), 0.1, 1.0) == 0.1
