"""meshkit.validate: every refusal is InvalidArgument naming its field; valid values pass
through unchanged. (Page sizes and tokens: test_paging.py.)"""

from __future__ import annotations

import pytest

from meshkit import validate
from tests.unit.refusals import refusal


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
