"""meshkit.validate: every refusal is InvalidArgument naming its field; valid values pass
through unchanged; page tokens round-trip and nothing undecodable escapes as another
exception."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from meshkit import validate
from meshkit.errors import Code, InvalidArgument


def refusal(call: object, *args: object, **kwargs: object) -> InvalidArgument:
    assert callable(call)
    with pytest.raises(InvalidArgument) as info:
        call(*args, **kwargs)
    assert info.value.code is Code.INVALID_ARGUMENT
    return info.value


@pytest.mark.parametrize(("value", "problem"), [
    ("", "required"),
    ("o" * 65, "at most 64 characters, got 65"),
    ("o\x00", "must not contain NUL or control characters"),
    ("o\n", "must not contain NUL or control characters"),
    ("o\x7f", "must not contain NUL or control characters"),
    ("o\x85", "must not contain NUL or control characters"),
    ("a b", "only visible ASCII characters, no spaces"),
    ("订单", "only visible ASCII characters, no spaces"),
    ("o\u200b", "only visible ASCII characters, no spaces"),
])
def test_identifier_refusals_name_the_field(value: str, problem: str) -> None:
    err = refusal(validate.identifier, "order_id", value, max_len=64)
    assert err.message == f"order_id: {problem}"
    assert err.reason == "BAD_ORDER_ID"


def test_identifier_accepts_visible_ascii_up_to_the_limit() -> None:
    for value in ("wd-0123abcdef", "o" * 64, "a:b/c=d+e_f.g~h!", "!~"):
        assert validate.identifier("order_id", value, max_len=64) == value
    assert validate.identifier("method_id", "", required=False) == ""
    assert refusal(validate.identifier, "x", "", reason="CUSTOM").reason == "CUSTOM"


def test_text_allows_printable_text_and_line_breaks_only_when_multiline() -> None:
    assert validate.text("note", "fixed by hand, 已处理 ✓") == "fixed by hand, 已处理 ✓"
    assert validate.text("note", "line 1\nline 2\tdone\r\n", multiline=True)
    assert validate.text("reason", "") == ""
    assert validate.text("reason", "x" * 10_000, max_len=None)
    for value, multiline in (("a\x00b", True), ("a\nb", False), ("a\x1cb", True), ("\x1c", False)):
        err = refusal(validate.text, "note", value, multiline=multiline)
        assert err.message == "note: must not contain NUL or control characters"
    too_long = refusal(validate.text, "note", "x" * 11, max_len=10)
    assert too_long.message == "note: at most 10 characters, got 11"
    assert refusal(validate.text, "note", "  \n ", required=True, multiline=True).message == "note: required"


def test_one_of_does_not_echo_long_or_unreadable_values() -> None:
    assert validate.one_of("channel", "bank", ("bank", "alipay")) == "bank"
    assert refusal(validate.one_of, "channel", "atm", ("bank", "alipay")).message == \
        "channel: 'atm' is not one of alipay, bank"
    for value in ("x" * 33, "a\x00"):
        assert refusal(validate.one_of, "channel", value, ("bank",)).message == \
            "channel: this value is not one of bank"


def test_integers() -> None:
    assert validate.positive("uid", validate.INT64_MAX) == validate.INT64_MAX
    for value in (0, -1, validate.INT64_MAX + 1):
        assert refusal(validate.positive, "uid", value).message.startswith("uid: must be a positive integer")
    assert validate.in_range("min_age_seconds", 0, 0, 10) == 0
    assert refusal(validate.in_range, "min_age_seconds", 11, 0, 10).message == \
        "min_age_seconds: must be between 0 and 10, got 11"
    assert validate.page_size(0, default=20, maximum=200) == 20
    assert validate.page_size(500, default=20, maximum=200) == 200
    negative = refusal(validate.page_size, -1, default=20, maximum=200)
    assert negative.message == "page_size: must be >= 0, got -1"
    assert validate.count("tokens", ["a"] * 3, 3) is None
    assert refusal(validate.count, "tokens", ["a"] * 4, 3).message == "tokens: at most 3 per call, got 4"


@pytest.mark.parametrize("value", ["", "x", "-1", "+1", " 1", "1 ", "1\n", "١٢", "²", "1.0", "9" * 5000,
                                   str(validate.INT64_MAX + 1), "0"])
def test_decimal_takes_ascii_digits_in_range_only(value: str) -> None:
    assert refusal(validate.decimal, "cursor", value, 1, validate.INT64_MAX).message == "cursor: malformed"


def test_decimal_accepts_the_bounds() -> None:
    assert validate.decimal("cursor", "1", 1, 9) == 1
    assert validate.decimal("cursor", str(validate.INT64_MAX), 1, validate.INT64_MAX) == validate.INT64_MAX
    assert validate.decimal("cursor", "007", 1, 9) == 7


def test_id_token() -> None:
    assert validate.decode_id_token("") is None
    assert validate.decode_id_token("123") == 123
    assert validate.decode_id_token(str(validate.INT64_MAX)) == validate.INT64_MAX
    for bad in ("0", "zz", "1\x00", str(validate.INT64_MAX + 1), "9" * 19):
        err = refusal(validate.decode_id_token, bad)
        assert (err.message, err.reason) == ("page_token: malformed", "BAD_PAGE_TOKEN")


def test_keyset_token_round_trip_is_exact() -> None:
    base = datetime(2026, 2, 1, 20, 0, 0, tzinfo=UTC)
    for micros in (0, 1, 123456, 999_999, 86_400 * 10**6 - 1):
        at = base + timedelta(microseconds=micros)
        token = validate.encode_keyset_token(at, "wd-1:x|y")
        assert "=" not in token
        assert validate.decode_keyset_token(token) == (at, "wd-1:x|y")
    assert validate.decode_keyset_token("") is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "%%%", "a", "a" * 513, "YQ==",               # not base64url, too short, too long, padded
    _b64(b"\xff\xfe:o-1"),                       # not ASCII
    _b64(b"123"), _b64(b"123:"),                  # no id
    _b64(b"x:o-1"), _b64(b"-5:o-1"), _b64(b"\xd9\xa1:o-1"),
    _b64(b"99999999999999999999999:o-1"),        # beyond year 9999 (OverflowError before)
    _b64(b"253402300800000000:o-1"),             # first microsecond of year 10000
    _b64(b"1:o\x00-1"), _b64(b"1:o 1"),          # id with NUL or space
    _b64(b"1:" + b"o" * 129),                    # id too long
])
def test_keyset_token_garbage_is_malformed(token: str) -> None:
    err = refusal(validate.decode_keyset_token, token)
    assert (err.message, err.reason) == ("page_token: malformed", "BAD_PAGE_TOKEN")


def test_keyset_token_accepts_the_last_microsecond_of_9999() -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert validate.decode_keyset_token(validate.encode_keyset_token(last, "o")) == (last, "o")
