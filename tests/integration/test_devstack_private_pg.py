"""The private PostgreSQL that `make up` / `make test` start when none answers: started for real
(as root on this machine, so as the devstack-pg user) from a checkout inside a directory nobody
else may search, on a scratch port. It must answer, and no directory outside its own may change
mode (it used to chmod o+x every ancestor of the checkout, the home directory included)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import stat
import uuid
from pathlib import Path

import asyncpg
import pytest

from tools import devstack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def modes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in paths}


async def server_version(port: int) -> str:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=10)
    try:
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


def test_private_postgres_answers_and_widens_no_directory(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"  # like /root: 0700, so the old code would have opened it up
    home.mkdir()
    home.chmod(0o700)
    checkout = home / "checkout"
    checkout.mkdir()
    pg_home = Path("/var/tmp") / f"wallet-mesh-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(devstack, "RUN", checkout / ".run")
    monkeypatch.setattr(devstack, "PG_HOME", pg_home)
    monkeypatch.setattr(devstack, "PG_PORT", free_port())
    package = devstack.package_dir("pgserver", "pgserver")
    watched = list(dict.fromkeys([
        checkout, *checkout.parents, *pg_home.parents, devstack.ROOT, *devstack.ROOT.parents,
        package, package / "pginstall", package / "pginstall" / "bin", *package.parents,
    ]))
    before = modes(watched)
    as_root = os.geteuid() == 0
    try:
        port = devstack.start_pg()
        version = asyncio.run(server_version(port))
        own = pg_home.stat() if as_root else None
        data = devstack.pg_files()[0]
        assert (data / "PG_VERSION").exists()
    finally:
        if pg := devstack.private_pg():
            devstack.stop_pid(pg[0], "postgres", signal.SIGINT)
        shutil.rmtree(pg_home, ignore_errors=True)
    assert version.startswith("PostgreSQL 16"), version
    assert modes(watched) == before
    assert home.stat().st_mode & 0o777 == 0o700
    if as_root:
        assert own is not None
        assert own.st_uid == pwd.getpwnam(devstack.PG_OS_USER).pw_uid
        assert stat.S_IMODE(own.st_mode) == 0o700
        assert data.is_relative_to(pg_home)  # the data dir is not in the checkout
    else:
        assert data.is_relative_to(checkout)
