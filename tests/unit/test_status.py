"""meshkit.status: refusals leave with a google.rpc.ErrorInfo, and the client helper reads
its reason back from an AioRpcError (or None, never a guess from the message)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from redis import exceptions as redis_errors

from meshkit.errors import FailedPrecondition, RateLimited
from meshkit.interceptors import _wrap_unary
from meshkit.status import abort_with, error_info, reason_of, rich_status, status_code

DETAILS_KEY = "grpc-status-details-bin"


class Aborted(Exception):
    pass


class RecordingContext:
    """What the interceptor hands a handler, as far as ending a call goes."""

    def __init__(self, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        self.trailing = trailing
        self.ended: tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]] | None = None

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.trailing

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        self.ended = (code, details, tuple(trailing_metadata))
        raise Aborted(details)

    def as_client_error(self) -> grpc.aio.AioRpcError:
        """The AioRpcError a client of this call would catch."""
        assert self.ended is not None
        code, details, trailing = self.ended
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details)


async def test_a_domain_error_leaves_with_its_reason_domain_and_metadata() -> None:
    context = RecordingContext()
    with pytest.raises(Aborted):
        await abort_with(context, RateLimited("too many withdrawals; retry after 3 s", retry_after_ms=2500),  # type: ignore[arg-type]
                         "withdraw_svc")
    err = context.as_client_error()
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "too many withdrawals; retry after 3 s"
    info = error_info(err)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "USER_RATE_LIMITED", "withdraw_svc", {"retry_after_ms": "2500"})
    assert reason_of(err) == "USER_RATE_LIMITED"


async def test_trailing_metadata_set_before_the_abort_is_kept() -> None:
    context = RecordingContext(trailing=(("retry-after-ms", "40"),))
    with pytest.raises(Aborted):
        await abort_with(context, FailedPrecondition("no", reason="NOPE"), "account_svc")  # type: ignore[arg-type]
    assert context.ended is not None
    keys = [key for key, _ in context.ended[2]]
    assert keys == ["retry-after-ms", DETAILS_KEY]


def test_a_call_without_a_rich_status_has_no_reason() -> None:
    err = grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                               details="Deadline Exceeded")
    assert error_info(err) is None and reason_of(err) is None


def test_a_rich_status_that_contradicts_the_call_is_not_believed() -> None:
    status = rich_status(grpc.StatusCode.FAILED_PRECONDITION, "insufficient balance",
                         reason="INSUFFICIENT_BALANCE", domain="account_svc")
    trailing = grpc.aio.Metadata((DETAILS_KEY, status.SerializeToString()))
    err = grpc.aio.AioRpcError(grpc.StatusCode.FAILED_PRECONDITION, grpc.aio.Metadata(), trailing,
                               details="something else")
    assert reason_of(err) is None


def test_a_rich_status_without_error_info_has_no_reason() -> None:
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="gone")
    status.details.add().Pack(error_details_pb2.RetryInfo())
    trailing = grpc.aio.Metadata((DETAILS_KEY, status.SerializeToString()))
    err = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), trailing, details="gone")
    assert reason_of(err) is None


def test_status_code_reads_canonical_names_and_nothing_else() -> None:
    assert status_code("FAILED_PRECONDITION") is grpc.StatusCode.FAILED_PRECONDITION
    assert status_code("UNAVAILABLE") is grpc.StatusCode.UNAVAILABLE
    assert status_code("") is grpc.StatusCode.UNKNOWN
    assert status_code("insufficient balance") is grpc.StatusCode.UNKNOWN


async def run_wrapped(error: BaseException) -> grpc.aio.AioRpcError:
    async def behavior(request: Any, context: Any) -> Any:
        raise error

    context = RecordingContext()
    with pytest.raises(Aborted):
        await _wrap_unary("/mesh.test.v1.TestService/Get", behavior, "test_svc")(object(), context)  # type: ignore[arg-type]
    return context.as_client_error()


async def test_the_interceptor_sends_the_domain_errors_reason() -> None:
    refusal = FailedPrecondition("insufficient balance for amount_fen", reason="INSUFFICIENT_BALANCE")
    err = await run_wrapped(refusal)
    info = error_info(err)
    assert info is not None and (info.reason, info.domain) == ("INSUFFICIENT_BALANCE", "test_svc")
    assert err.details() == "insufficient balance for amount_fen"


async def test_the_interceptor_sends_an_outage_as_dependency_unavailable() -> None:
    err = await run_wrapped(redis_errors.ConnectionError("Connection refused"))
    info = error_info(err)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert info is not None and info.reason == "DEPENDENCY_UNAVAILABLE"
    assert dict(info.metadata) == {"dependency": "Redis"}
