"""meshkit.outage: which exceptions mean "a dependency is away", and the server interceptor
answering them UNAVAILABLE (naming the dependency, no secrets, one WARNING line) where
anything else stays INTERNAL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
import redis.exceptions as redis_errors

from meshkit import interceptors
from meshkit.interceptors import _wrap_unary
from meshkit.outage import PEER, POSTGRESQL, REDIS, Outage, OutageLog, outage_of


def raised_in(module: str, exc: BaseException) -> BaseException:
    """`exc` as it looks when it was raised inside `module` (asyncpg lets socket errors of
    its connects through as they are; only the frames they crossed say whose they are)."""
    scope: dict[str, Any] = {"__name__": module}
    exec("def boom(exc):\n    raise exc\n", scope)
    try:
        scope["boom"](exc)
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


def chained(outer: BaseException, inner: BaseException, how: str) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as first:
            if how == "cause":
                raise outer from first
            raise outer  # noqa: B904 - the implicit __context__ is what is tested
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.ConnectionFailureError("server closed the connection"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another process"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
    asyncpg.InterfaceError("pool is closing"),
], ids=lambda e: type(e).__name__)
def test_postgresql_away(exc: BaseException) -> None:
    outage = outage_of(exc)
    assert outage is not None and outage.dependency == POSTGRESQL
    assert outage.detail.startswith(type(exc).__name__)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError(),  # a pool acquire or connect that timed out
    OSError("Multiple exceptions: [Errno 111] Connect call failed, [Errno 99] Cannot assign"),
], ids=lambda e: type(e).__name__)
def test_socket_errors_from_asyncpg_are_postgresql(exc: BaseException) -> None:
    outage = outage_of(raised_in("asyncpg.connect_utils", exc))
    assert outage is not None and outage.dependency == POSTGRESQL


@pytest.mark.parametrize("exc", [
    redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    redis_errors.TimeoutError("Timeout reading from socket"),
    redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
    redis_errors.ReadOnlyError("You can't write against a read only replica."),
], ids=lambda e: type(e).__name__)
def test_redis_away(exc: BaseException) -> None:
    outage = outage_of(exc)
    assert outage is not None and outage.dependency == REDIS


def test_socket_error_from_redis_frames_is_redis() -> None:
    outage = outage_of(raised_in("redis.asyncio.connection", ConnectionResetError(104, "reset")))
    assert outage is not None and outage.dependency == REDIS


def test_a_connection_error_of_unknown_origin_is_a_dependency() -> None:
    outage = outage_of(ConnectionRefusedError(111, "refused"))
    assert outage is not None and outage.dependency == PEER


@pytest.mark.parametrize("how", ["cause", "context"])
def test_wrapped_outages_are_found(how: str) -> None:
    lost = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    outage = outage_of(chained(RuntimeError("while saving the order"), lost, how))
    assert outage == Outage(POSTGRESQL, "ConnectionDoesNotExistError: connection was closed in the "
                                        "middle of operation")


@pytest.mark.parametrize("exc", [
    ValueError("bad"), KeyError("k"), ZeroDivisionError(), FileNotFoundError(2, "no such file"),
    TimeoutError(),  # not from asyncpg or redis: nothing says a dependency is away
    asyncpg.UniqueViolationError("duplicate key"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    redis_errors.ResponseError("NOGROUP No such key"),
    redis_errors.DataError("bad value"),
], ids=lambda e: f"{type(e).__name__}-{e}")
def test_bugs_and_refusals_are_not_outages(exc: BaseException) -> None:
    assert outage_of(exc) is None


def test_chain_with_a_cycle_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert outage_of(a) is None


def test_detail_carries_no_password_or_dsn() -> None:
    exc = asyncpg.exceptions.ConnectionFailureError(
        "could not connect to postgresql://wallet:hunter2@db.internal:5432/mesh (password=hunter2)")
    outage = outage_of(exc)
    assert outage is not None
    assert "hunter2" not in outage.message and "wallet:" not in outage.message
    assert outage.message.startswith("PostgreSQL unavailable: ConnectionFailureError: ")
    assert len(outage_of(asyncpg.exceptions.ConnectionFailureError("x" * 5000)).detail) < 300  # type: ignore[union-attr]


def test_outage_log_folds_repeats_into_one_line(caplog: pytest.LogCaptureFixture) -> None:
    log = OutageLog(logging.getLogger("tests.outage"), every_s=3600)
    outage = Outage(POSTGRESQL, "ConnectionDoesNotExistError: gone")
    with caplog.at_level(logging.WARNING, logger="tests.outage"):
        for _ in range(50):
            log.warn("/svc/Method", outage)
        log.warn("/svc/Method", Outage(REDIS, "ConnectionError: refused"))
    assert [r.getMessage() for r in caplog.records] == [
        "/svc/Method: PostgreSQL unavailable: ConnectionDoesNotExistError: gone",
        "/svc/Method: Redis unavailable: ConnectionError: refused",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_failed_pass_keeps_the_traceback_only_for_bugs(caplog: pytest.LogCaptureFixture) -> None:
    log = OutageLog(logging.getLogger("tests.outage"))
    with caplog.at_level(logging.WARNING, logger="tests.outage"):
        log.failed(redis_errors.ConnectionError("refused"), "relay pass %d failed", 7)
        log.failed(ValueError("a bug"), "relay pass %d failed", 8)
    away, bug = caplog.records
    assert away.getMessage() == "relay pass 7 failed: Redis unavailable: ConnectionError: refused"
    assert away.exc_info is None
    assert bug.getMessage() == "relay pass 8 failed" and bug.exc_info is not None


# -- the server interceptor ------------------------------------------------------------------


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        self.status = (code, details)
        raise Aborted(details)


async def call_failing(make: Callable[[], BaseException]) -> tuple[grpc.StatusCode, str]:
    async def behavior(request: Any, context: Any) -> Any:
        raise make()

    context = FakeContext()
    with pytest.raises(Aborted):
        await _wrap_unary("/mesh.test.v1.TestService/Get", behavior, "test_svc")(object(), context)  # type: ignore[arg-type]
    assert context.status is not None
    return context.status


async def test_interceptor_answers_a_lost_database_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    interceptors._outages = OutageLog(interceptors.log)  # no line folded into an earlier test's
    with caplog.at_level(logging.WARNING, logger="meshkit.interceptors"):
        code, details = await call_failing(lambda: asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith("PostgreSQL unavailable: ConnectionDoesNotExistError")
    [record] = [r for r in caplog.records if r.name == "meshkit.interceptors"]
    assert record.levelno == logging.WARNING and record.exc_info is None


async def test_interceptor_answers_redis_away_unavailable() -> None:
    code, details = await call_failing(lambda: redis_errors.ConnectionError("Connection refused"))
    assert code == grpc.StatusCode.UNAVAILABLE and details.startswith("Redis unavailable")


async def test_interceptor_keeps_internal_for_bugs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="meshkit.interceptors"):
        code, details = await call_failing(lambda: ValueError("a bug"))
    assert code == grpc.StatusCode.INTERNAL and "a bug" not in details
    assert any(r.exc_info is not None for r in caplog.records)
