"""JSON-lines logging stamped with trace id, span id and the order being worked on."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from opentelemetry import trace

_order_id: contextvars.ContextVar[str] = contextvars.ContextVar("order_id", default="")
_uid: contextvars.ContextVar[int] = contextvars.ContextVar("uid", default=0)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextlib.contextmanager
def log_context(*, order_id: str = "", uid: int = 0) -> Iterator[None]:
    """Every log line inside carries this order id and uid."""
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
    if order_id:
        tokens.append((_order_id, _order_id.set(order_id)))
    if uid:
        tokens.append((_uid, _uid.set(uid)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            line["trace_id"] = format(ctx.trace_id, "032x")
            line["span_id"] = format(ctx.span_id, "016x")
        if order_id := _order_id.get():
            line["order_id"] = order_id
        if uid := _uid.get():
            line["uid"] = uid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


LOG_LEVEL_VAR = "LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level_from_env(environ: Mapping[str, str] | None = None) -> str:
    """LOG_LEVEL: DEBUG, INFO (the default), WARNING or ERROR, in any case. Anything else
    stops the process: a mistyped level would otherwise hide, or flood, the night's logs."""
    raw = (os.environ if environ is None else environ).get(LOG_LEVEL_VAR, "").strip()
    if not raw:
        return "INFO"
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise SystemExit(f"{LOG_LEVEL_VAR}={raw!r}: expected one of {', '.join(LOG_LEVELS)}")
    return level


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # What Python would otherwise print as plain text into the same stream (warnings, a
    # crash's traceback) becomes JSON lines too, so every line of the log file parses.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("uncaught").critical("uncaught %s: %s", kind.__name__, error,
                                           exc_info=(kind, error, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("uncaught").critical("uncaught %s in thread %s: %s", args.exc_type.__name__, thread,
                                           args.exc_value, exc_info=(args.exc_type, args.exc_value,
                                                                     args.exc_traceback))
