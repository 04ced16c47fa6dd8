"""meshkit.redact: what a log line may show of a secret."""

from __future__ import annotations

from meshkit import redact


def test_account_numbers_keep_their_last_four_digits_only() -> None:
    assert redact.account("6222021234567890") == "****7890"
    assert redact.account("1234") == "****"  # never all of a short one
    assert redact.account("") == "****"


def test_tokens_keep_their_first_eight_characters() -> None:
    token = "eyJhbGciOi.secret-signature-part"
    assert redact.token(token) == "eyJhbGci…"
    assert "signature" not in redact.token(token)
    assert redact.token("short") == "…"


def test_urls_lose_password_query_fragment_and_deep_path() -> None:
    assert redact.url("postgresql://postgres:hunter2@db.internal:5432/mesh") == \
        "postgresql://postgres@db.internal:5432/mesh"
    hook = "https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc#frag"
    shown = redact.url(hook)
    assert shown == "https://hooks.example.com/services/…"
    for secret in ("XXXXSECRET", "token=abc", "frag", "T000"):
        assert secret not in shown
    assert redact.url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact.url("http://[::1]:8080/a?b=c") == "http://[::1]:8080/a"
    assert redact.url("http://host:99999/") == "<unparsable url>"
