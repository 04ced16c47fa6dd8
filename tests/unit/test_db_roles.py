"""meshkit.db's per-schema roles and pooler options, and where a session lock connects."""

from __future__ import annotations

import pytest

from meshkit import db
from meshkit.settings import pooler_from_env


def test_a_schema_role_is_one_per_schema_and_database_and_fits_postgresql() -> None:
    assert db.schema_role("withdraw", "wallet") == "withdraw@wallet"
    long_db = "d" * 60
    names = {db.schema_role(s, d) for s in ("withdraw", "account") for d in (long_db, long_db + "x")}
    assert len(names) == 4
    assert all(len(n.encode()) <= 63 for n in names)


def test_with_user_keeps_password_host_and_database() -> None:
    url = "postgresql://admin:s3cret@db.example:6432/wallet?sslmode=require"
    assert db.with_user(url, "withdraw@wallet") == \
        "postgresql://withdraw%40wallet:s3cret@db.example:6432/wallet?sslmode=require"
    assert db.with_user("postgresql://postgres@127.0.0.1:5432/x", "a@x") == "postgresql://a%40x@127.0.0.1:5432/x"


def test_behind_pgbouncer_the_statement_cache_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert db.connect_options("none") == {}
    assert db.connect_options("pgbouncer") == {"statement_cache_size": 0}
    monkeypatch.setenv("DATABASE_POOLER", "pgbouncer")
    assert db.connect_options() == {"statement_cache_size": 0}
    monkeypatch.setenv("DATABASE_POOLER", "pgpool")
    with pytest.raises(SystemExit, match="DATABASE_POOLER='pgpool' is not one of none, pgbouncer"):
        pooler_from_env()
