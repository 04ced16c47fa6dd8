"""meshkit.secrets: the key rules every signing key ring follows (reward tokens now)."""

from __future__ import annotations

import logging

import pytest

from account_svc.settings import Settings
from campaign.tokens import DEFAULT_KEYS, parse_keys
from meshkit.secrets import MIN_KEY_BYTES, key_ring

LONG = "s" * MIN_KEY_BYTES


def ring(raw: str, env: dict[str, str]) -> dict[str, bytes]:
    return key_ring("REWARD_TOKEN_KEYS", raw, parse_keys, DEFAULT_KEYS, env)


def test_unset_keys_refuse_to_start_outside_dev() -> None:
    for env in ({}, {"MESH_ENV": "prod"}, {"MESH_ENV": "development"}):
        with pytest.raises(SystemExit, match="REWARD_TOKEN_KEYS is not set"):
            ring("", env)


def test_unset_keys_under_dev_use_the_dev_key_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="meshkit.secrets"):
        assert ring("  ", {"MESH_ENV": "dev"}) == parse_keys(DEFAULT_KEYS)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "built-in development key" in caplog.records[0].getMessage()


def test_a_short_key_is_refused_by_id_never_by_value() -> None:
    secret = "short-but-secret-value"
    for env in ({}, {"MESH_ENV": "dev"}):
        with pytest.raises(SystemExit) as exc:
            ring(f"k1:{LONG},k2:{secret}", env)
        message = str(exc.value)
        assert "REWARD_TOKEN_KEYS" in message and "'k2'" in message and str(len(secret)) in message
        assert secret not in message


def test_the_dev_key_passes_only_under_dev() -> None:
    assert ring(DEFAULT_KEYS, {"MESH_ENV": "dev"}) == parse_keys(DEFAULT_KEYS)
    with pytest.raises(SystemExit, match="key 'dev' is"):
        ring(DEFAULT_KEYS, {})
    # Its id with another (short) secret is not the dev key.
    with pytest.raises(SystemExit, match="key 'dev' is"):
        ring("dev:other", {"MESH_ENV": "dev"})


def test_long_keys_pass_everywhere_and_malformed_ones_name_the_variable() -> None:
    assert ring(f"k1:{LONG},k2:{LONG}x", {}) == {"k1": LONG.encode(), "k2": f"{LONG}x".encode()}
    with pytest.raises(SystemExit, match=r"REWARD_TOKEN_KEYS: .*listed twice"):
        ring(f"k1:{LONG},k1:{LONG}", {})


def test_account_settings_apply_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="REWARD_TOKEN_KEYS is not set"):
        Settings.from_env({})
    with pytest.raises(SystemExit, match="key 'k1' is 5 bytes"):
        Settings.from_env({"REWARD_TOKEN_KEYS": "k1:12345", "MESH_ENV": "dev"})
    assert Settings.from_env({"MESH_ENV": "dev"}).token_keys == parse_keys(DEFAULT_KEYS)
    assert Settings.from_env({"REWARD_TOKEN_KEYS": f"k1:{LONG}", "SESSION_TOKEN_KEYS": f"s1:{LONG}"}
                             ).token_keys == {"k1": LONG.encode()}
