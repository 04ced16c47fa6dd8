"""Is this exception a dependency being away (PostgreSQL or Redis unreachable, restarting,
out of connections), rather than a bug or a refusal? One definition for every service:
the server interceptor answers such errors UNAVAILABLE ("retry the same request": every
write here is idempotent), background loops log them in one line, and payout_svc never
counts them as a failed attempt.

Domain modules do not import this; it is the one place that knows asyncpg's and
redis-py's exception families."""

from __future__ import annotations

import errno
import logging
import re
import socket
import time
from dataclasses import dataclass
from types import TracebackType

import asyncpg
import redis.exceptions as redis_errors

POSTGRESQL = "PostgreSQL"
REDIS = "Redis"
PEER = "a dependency"

# How far along __cause__ / __context__ to look: a connection loss is often re-raised by a
# cleanup step (asyncpg's Transaction.__aexit__ on a closed connection says "the underlying
# connection is closed", its context is the loss itself).
_MAX_CHAIN = 8
_DETAIL_CHARS = 200

# SQLSTATE class 08 (connection exception), 53 (insufficient resources: too many
# connections, out of memory, disk full), 57 (operator intervention: admin or crash
# shutdown, cannot connect now, and query_canceled, which a statement timeout raises when
# the server is too loaded to answer in time; the transaction is rolled back either way).
_PG_AWAY: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
)
# asyncpg's InterfaceError is also raised for misuse ("another operation is in progress"):
# only these messages mean the connection or pool is gone.
_PG_INTERFACE_AWAY = re.compile(r"connection is closed|connection was closed|pool is clos", re.I)
# Redis unreachable, loading its data set after a restart, failing over or read-only
# while a replica is promoted.
_REDIS_AWAY: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ClusterDownError,
    redis_errors.TryAgainError, redis_errors.ReadOnlyError,
)
_NETWORK_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN,
})
# user:password@ in a URL, password=... in a DSN or a message.
_SECRETS = (
    (re.compile(r"(\w+://)[^/\s@]*@"), r"\1***@"),
    (re.compile(r"(password\s*=\s*)\S+", re.I), r"\1***"),
)


@dataclass(frozen=True)
class Outage:
    dependency: str   # "PostgreSQL", "Redis" or "a dependency"
    detail: str       # exception type and message, secrets removed

    @property
    def message(self) -> str:
        """The status message a caller gets: names the dependency, says that a retry is safe."""
        return f"{self.dependency} unavailable: {self.detail}; retry the same request"


def outage_of(exc: BaseException) -> Outage | None:
    """The dependency `exc` (or an exception it was raised from or while handling) says is
    away; None when it is anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        dependency = _dependency_of(current)
        if dependency is not None:
            return Outage(dependency, _detail(current))
        current = current.__cause__ or current.__context__
    return None


def _dependency_of(exc: BaseException) -> str | None:
    if isinstance(exc, _PG_AWAY):
        return POSTGRESQL
    if isinstance(exc, asyncpg.InterfaceError) and _PG_INTERFACE_AWAY.search(str(exc)):
        return POSTGRESQL
    if isinstance(exc, _REDIS_AWAY):
        return REDIS
    if isinstance(exc, OSError):
        # asyncpg lets socket errors of its (re)connects through as they are
        # (ConnectionRefusedError, ConnectionResetError, TimeoutError of a pool acquire):
        # the frames they crossed say whose they are.
        origin = _origin(exc.__traceback__)
        if origin is not None:
            return origin
        if isinstance(exc, ConnectionError | socket.gaierror) or exc.errno in _NETWORK_ERRNOS:
            return PEER
    return None


def _origin(tb: TracebackType | None) -> str | None:
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module == "asyncpg" or module.startswith("asyncpg."):
            return POSTGRESQL
        if module == "redis" or module.startswith("redis."):
            return REDIS
        tb = tb.tb_next
    return None


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    if len(text) > _DETAIL_CHARS:
        text = text[:_DETAIL_CHARS] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OutageLog:
    """One WARNING line per dependency per `every_s`, with how many were folded into it:
    during an outage every RPC and every loop fails the same way, and a traceback each
    would bury the one line that says what is down."""

    def __init__(self, logger: logging.Logger, every_s: float = 1.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = {}

    def warn(self, where: str, outage: Outage) -> None:
        now = time.monotonic()
        key = outage.dependency
        if now - self._last.get(key, -self.every_s) < self.every_s:
            self._folded[key] = self._folded.get(key, 0) + 1
            return
        self._last[key] = now
        folded = self._folded.pop(key, 0)
        self.logger.warning("%s: %s unavailable: %s%s", where, outage.dependency, outage.detail,
                            f" (and {folded} more like it)" if folded else "")

    def failed(self, exc: BaseException, message: str, *args: object) -> None:
        """A pass of a loop failed: a dependency away is one folded WARNING line, anything
        else is logged with its traceback."""
        outage = outage_of(exc)
        if outage is None:
            self.logger.warning(message, *args, exc_info=exc)
        else:
            self.warn(message % args if args else message, outage)
