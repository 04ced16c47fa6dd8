"""`make status` (tools/devstack.py status) warns when PostgreSQL never vacuums by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import devstack


@pytest.fixture
def external_servers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(devstack, "ENV_FILE", tmp_path / "devstack.env")
    monkeypatch.setattr(devstack, "external_ok", lambda kind, url: True)
    monkeypatch.setattr(devstack, "private_pg", lambda: None)
    monkeypatch.setattr(devstack, "private_redis", lambda: None)


@pytest.mark.parametrize(("settings", "warned"), [
    ({"autovacuum": "off", "track_counts": "on"}, "autovacuum is off"),
    ({"autovacuum": "on", "track_counts": "off"}, "track_counts is off"),
    ({"autovacuum": "on", "track_counts": "on"}, None),
    ({}, None),  # settings unreadable: say nothing rather than guess
])
def test_status_warns_when_autovacuum_is_off(external_servers: None, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], settings: dict[str, str],
                                            warned: str | None) -> None:
    monkeypatch.setattr(devstack, "pg_settings", lambda url: settings)
    assert devstack.status() == 0
    out = capsys.readouterr().out
    if warned is None:
        assert "WARNING" not in out
    else:
        warning = next(line for line in out.splitlines() if "WARNING" in line)
        assert warned in warning and "VACUUM" in warning
        # Under the PostgreSQL line, not the Redis one.
        lines = out.splitlines()
        assert lines.index(warning) == 1 and lines[0].startswith("DATABASE_URL=")
