"""Printed connection URLs never show a password (meshkit.urls.redact_url, used by devstack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshkit.urls import redact_url
from tools import devstack


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:s3cr%40t@db.internal:5432/wallet?sslmode=require",
     "postgresql://app:***@db.internal:5432/wallet?sslmode=require"),
    ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("rediss://ops:pa:ss@cache:6380/2", "rediss://ops:***@cache:6380/2"),
    ("postgresql://app:p@ss@[::1]:5432/db", "postgresql://app:***@[::1]:5432/db"),
    ("postgresql://app@h/db?password=x&application_name=recon",
     "postgresql://app@h/db?password=***&application_name=recon"),
    ("host=db password='a b' dbname=wallet", "host=db password=*** dbname=wallet"),
    # nothing secret: unchanged, so the line still names the server
    ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_redact_url_masks_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_devstack_status_prints_urls_without_passwords(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    env = tmp_path / "devstack.env"
    env.write_text("export DATABASE_URL=postgresql://app:hunter2@db:5432/wallet\n"
                   "export REDIS_URL=redis://:hunter3@cache:6379/0\n")
    monkeypatch.setattr(devstack, "ENV_FILE", env)
    monkeypatch.setattr(devstack, "external_ok", lambda kind, url: True)
    monkeypatch.setattr(devstack, "private_pg", lambda: None)
    monkeypatch.setattr(devstack, "private_redis", lambda: None)
    monkeypatch.setattr(devstack, "pg_settings", lambda url: {})
    assert devstack.status() == 0
    out = capsys.readouterr().out
    assert "hunter" not in out
    assert "DATABASE_URL=postgresql://app:***@db:5432/wallet" in out
    assert "REDIS_URL=redis://:***@cache:6379/0" in out


def test_devstack_ensure_prints_masked_urls_and_keeps_real_ones_in_the_env_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(devstack, "RUN", tmp_path)
    monkeypatch.setattr(devstack, "ENV_FILE", tmp_path / "devstack.env")
    monkeypatch.setattr(devstack, "external_ok", lambda kind, url: True)
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db:5432/wallet")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter3@cache:6379/0")
    devstack.ensure()
    out = capsys.readouterr().out
    assert "hunter" not in out and "app:***@db" in out
    assert "hunter2" in (tmp_path / "devstack.env").read_text()  # the services need the real one
