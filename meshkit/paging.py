"""Paging of every list RPC (AIP-158): how many items a page holds, and the page token.

A page token is opaque to callers and has one format: base64url, unpadded, of
"<microseconds since 1970>:<key>", the position of the last item shown. Lists ordered by
time then key (orders, payouts) fill both parts; lists ordered by a row id alone (ledger
entries, audit, four-eyes changes) leave the time empty and put the row id in the key.
Whatever is wrong with a token is "page_token: malformed" (BAD_PAGE_TOKEN), and every
value decoded from one is range-checked like the field it stands for.

Pure: no grpc, asyncpg or redis.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meshkit import validate

MAX_TOKEN_LEN = 512

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = re.compile(r"[0-9]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_MAX_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // _MICRO


@dataclass(frozen=True)
class PageSize:
    """The sizes one list allows: `default` when the caller asks for 0, never more than
    `maximum`; a negative size is refused."""

    default: int
    maximum: int

    def of(self, requested: int, field: str = "page_size") -> int:
        if requested < 0:
            raise validate.invalid(field, f"must be >= 0, got {requested}")
        return min(requested or self.default, self.maximum)


# Lists a person pages through (ledger entries, orders, audit, four-eyes changes).
PERSON_LIST = PageSize(default=20, maximum=200)
# Lists an operator's tool reads (discrepancies, dead letters).
OPERATOR_LIST = PageSize(default=100, maximum=1000)
# Lists a service reads in bulk (the change feed, the gateway's payouts for recon).
BULK_LIST = PageSize(default=500, maximum=5000)


@dataclass(frozen=True)
class Position:
    """Where a page ended: its last item's key, and its time in lists ordered by time first."""

    key: str
    at: datetime | None = None


def encode(position: Position) -> str:
    micros = "" if position.at is None else str((position.at - _EPOCH) // _MICRO)  # exact: no float
    return base64.urlsafe_b64encode(f"{micros}:{position.key}".encode()).decode().rstrip("=")


def decode(token: str, *, timed: bool, key_max_len: int = validate.MAX_ID_LEN,
           field: str = "page_token") -> Position | None:
    """The position a token stands for, None for no token. `timed`: the list is ordered
    by time first, so its tokens carry one (and other lists' tokens do not)."""
    if not token:
        return None
    malformed = validate.invalid(field, "malformed", "BAD_PAGE_TOKEN")
    if len(token) > MAX_TOKEN_LEN or not _B64URL.fullmatch(token):
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        micros_text, sep, key = raw.partition(":")
        if not sep or timed != bool(micros_text):
            raise malformed
        validate.identifier(field, key, max_len=key_max_len)
        if not timed:
            return Position(key)
        micros = validate.decimal(field, micros_text, 0, _MAX_MICROS)
        return Position(key, _EPOCH + micros * _MICRO)
    except Exception as exc:
        # Untrusted bytes through pure decoding: whatever it raised, the token is not ours.
        raise malformed from exc


def keyset_token(at: datetime, key: str) -> str:
    """The token of a list ordered by (time, key)."""
    return encode(Position(key, at))


def keyset_of(token: str, *, key_max_len: int = validate.MAX_ID_LEN,
              field: str = "page_token") -> tuple[datetime, str] | None:
    position = decode(token, timed=True, key_max_len=key_max_len, field=field)
    if position is None:
        return None
    assert position.at is not None
    return position.at, position.key


def row_token(row_id: int) -> str:
    """The token of a list ordered by row id."""
    return encode(Position(str(row_id)))


def row_of(token: str, *, high: int = validate.INT64_MAX, field: str = "page_token") -> int | None:
    """The row id (1..high) a row token stands for, None for no token."""
    if not token:
        return None
    if _DIGITS.fullmatch(token):
        # The bare decimal row id that tokens were until 2026-12: still read for one
        # release, so a caller paging through an upgrade is not refused. (All digits is
        # never a token of the format above: it decodes to bytes that are not ASCII.)
        return validate.decimal(field, token, 1, high, reason="BAD_PAGE_TOKEN")
    position = decode(token, timed=False, key_max_len=validate.MAX_ID_LEN, field=field)
    assert position is not None
    return validate.decimal(field, position.key, 1, high, reason="BAD_PAGE_TOKEN")
