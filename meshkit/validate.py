"""Checks of request fields, the same for every service: a bad value is refused with
InvalidArgument naming its field ("order_id: required"), before anything is read or
written. Without them a NUL reaches PostgreSQL (which refuses it in text), an integer
beyond BIGINT reaches asyncpg, a malformed stream id reaches Redis: each fails deep in a
use case as INTERNAL.

The rules, once:
- an identifier is 1..max_len visible ASCII characters: no spaces, no control
  characters, nothing a log line, a Redis key or a terminal could misread;
- free text may hold any printable character, never NUL or another control character
  (tab and line breaks only where it is multi-line);
- integers are checked against the column they end in (BIGINT) or a stated range;
- page sizes and page tokens: meshkit.paging, on top of these.

Pure: no grpc, asyncpg or redis.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sized

from meshkit.errors import InvalidArgument

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
MAX_ID_LEN = 128
# The ledger's bound on an order id: every order the mesh pays was debited under it, so
# services that look orders up refuse longer ids instead of asking the ledger in vain.
MAX_ORDER_ID_LEN = 64
MAX_TEXT_LEN = 1000
_MAX_DIGITS = 40

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_DIGITS = re.compile(r"[0-9]+")


def invalid(field: str, problem: str, reason: str = "") -> InvalidArgument:
    """The refusal of `field`: "<field>: <problem>", reason BAD_<FIELD> unless given."""
    return InvalidArgument(f"{field}: {problem}", reason=reason or _reason_of(field))


def _reason_of(field: str) -> str:
    name = field.split("[", 1)[0].rsplit(".", 1)[-1]
    return "BAD_" + re.sub(r"[^A-Za-z0-9]+", "_", name).upper()


# --- strings ------------------------------------------------------------------------------


def identifier(field: str, value: str, *, max_len: int = MAX_ID_LEN, required: bool = True,
               reason: str = "") -> str:
    """`value` if it is an id: 1..max_len visible ASCII characters (or empty, when optional)."""
    if not value:
        if required:
            raise invalid(field, "required", reason)
        return value
    if len(value) > max_len:
        raise invalid(field, f"at most {max_len} characters, got {len(value)}", reason)
    if not _VISIBLE_ASCII.fullmatch(value):
        if _CONTROL.search(value):
            raise invalid(field, "must not contain NUL or control characters", reason)
        raise invalid(field, "only visible ASCII characters, no spaces", reason)
    return value


def text(field: str, value: str, *, max_len: int | None = MAX_TEXT_LEN, required: bool = False,
         multiline: bool = False, reason: str = "") -> str:
    """`value` if it is free text of at most max_len characters (None: any length) without
    NUL or other control characters (tab, CR and LF allowed when multiline)."""
    if max_len is not None and len(value) > max_len:
        raise invalid(field, f"at most {max_len} characters, got {len(value)}", reason)
    if (_CONTROL_BUT_LINES if multiline else _CONTROL).search(value):
        raise invalid(field, "must not contain NUL or control characters", reason)
    if required and not value.strip():
        raise invalid(field, "required", reason)
    return value


def one_of(field: str, value: str, allowed: Collection[str], reason: str = "") -> str:
    """`value` if it is one of `allowed` (channel names, filters...)."""
    if value not in allowed:
        shown = repr(value) if len(value) <= 32 and _VISIBLE_ASCII.fullmatch(value) else "this value"
        raise invalid(field, f"{shown} is not one of {', '.join(sorted(allowed))}", reason)
    return value


def count(field: str, values: Sized, maximum: int, reason: str = "") -> None:
    """A repeated field holds at most `maximum` items."""
    if len(values) > maximum:
        raise invalid(field, f"at most {maximum} per call, got {len(values)}", reason)


# --- integers -----------------------------------------------------------------------------


def in_range(field: str, value: int, low: int, high: int, reason: str = "") -> int:
    if not low <= value <= high:
        raise invalid(field, f"must be between {low} and {high}, got {value}", reason)
    return value


def positive(field: str, value: int, reason: str = "") -> int:
    """A positive BIGINT: a uid, a row id."""
    if not 0 < value <= INT64_MAX:
        raise invalid(field, f"must be a positive integer, got {value}", reason)
    return value


def decimal(field: str, value: str, low: int, high: int, reason: str = "") -> int:
    """The integer written in `value`, ASCII digits only (int() also takes "١٢" and " 12"),
    within low..high: anything else is "<field>: malformed"."""
    # Length first: int() of thousands of digits is slow (and refused past 4300).
    if len(value) > _MAX_DIGITS or not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
        raise invalid(field, "malformed", reason)
    return int(value)
