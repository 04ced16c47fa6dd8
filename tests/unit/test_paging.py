"""meshkit.paging: page sizes clamp; page tokens have one format, round-trip exactly, and
nothing undecodable escapes as another exception than "page_token: malformed"."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from meshkit import paging, validate
from tests.unit.refusals import refusal


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_size() -> None:
    sizes = paging.PageSize(default=20, maximum=200)
    assert sizes.of(0) == 20
    assert sizes.of(500) == 200
    assert sizes.of(7) == 7
    assert refusal(sizes.of, -1).message == "page_size: must be >= 0, got -1"
    assert refusal(sizes.of, -1, field="limit").message == "limit: must be >= 0, got -1"


def test_row_token() -> None:
    assert paging.row_of("") is None
    for row_id in (1, 123, validate.INT64_MAX):
        token = paging.row_token(row_id)
        assert "=" not in token and not token.isdigit()
        assert paging.row_of(token) == row_id
    for bad in ("0", "zz", "1\x00", str(validate.INT64_MAX + 1), "9" * 19,
                paging.row_token(0), _b64(b":x"), _b64(b":"), _b64(b"5"),
                paging.keyset_token(datetime(2026, 1, 1, tzinfo=UTC), "12")):  # a time-ordered list's token
        err = refusal(paging.row_of, bad)
        assert (err.message, err.reason) == ("page_token: malformed", "BAD_PAGE_TOKEN")


def test_row_token_of_the_old_decimal_format_is_still_read() -> None:
    assert paging.row_of("123") == 123
    assert paging.row_of(str(validate.INT64_MAX)) == validate.INT64_MAX


def test_one_format_for_both_orders() -> None:
    at = datetime(2026, 2, 1, 20, 0, 0, tzinfo=UTC)
    raw = base64.urlsafe_b64decode(paging.keyset_token(at, "o-1") + "==").decode()
    assert raw == f"{int(at.timestamp()) * 10**6}:o-1"
    assert base64.urlsafe_b64decode(paging.row_token(42) + "==").decode() == ":42"


def test_keyset_token_round_trip_is_exact() -> None:
    base = datetime(2026, 2, 1, 20, 0, 0, tzinfo=UTC)
    for micros in (0, 1, 123456, 999_999, 86_400 * 10**6 - 1):
        at = base + timedelta(microseconds=micros)
        token = paging.keyset_token(at, "wd-1:x|y")
        assert "=" not in token
        assert paging.keyset_of(token) == (at, "wd-1:x|y")
    assert paging.keyset_of("") is None


@pytest.mark.parametrize("token", [
    "%%%", "a", "a" * 513, "YQ==",               # not base64url, too short, too long, padded
    _b64(b"\xff\xfe:o-1"),                       # not ASCII
    _b64(b"123"), _b64(b"123:"),                  # no id
    _b64(b":o-1"),                               # no time (a row-ordered list's token)
    _b64(b"x:o-1"), _b64(b"-5:o-1"), _b64(b"\xd9\xa1:o-1"),
    _b64(b"99999999999999999999999:o-1"),        # beyond year 9999 (OverflowError before)
    _b64(b"253402300800000000:o-1"),             # first microsecond of year 10000
    _b64(b"1:o\x00-1"), _b64(b"1:o 1"),          # id with NUL or space
    _b64(b"1:" + b"o" * 129),                    # id too long
])
def test_keyset_token_garbage_is_malformed(token: str) -> None:
    err = refusal(paging.keyset_of, token)
    assert (err.message, err.reason) == ("page_token: malformed", "BAD_PAGE_TOKEN")


def test_keyset_token_accepts_the_last_microsecond_of_9999() -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert paging.keyset_of(paging.keyset_token(last, "o")) == (last, "o")
