#!/usr/bin/env python3
"""A private PgBouncer in transaction-pooling mode in front of a PostgreSQL.

    python tools/pgbouncer.py start [RUN_DIR]    (prints the `export` lines to use it)
    python tools/pgbouncer.py stop [RUN_DIR]

API: `start(database_url, run_dir) -> pgbouncer_url`, `stop(run_dir)`, `env(run_dir)`.

Debian's `pgbouncer` (1.18 in Debian 12) is used: as root a missing one is installed with
apt-get, otherwise the tool says how. PgBouncer refuses to run as root, so as root it runs
as devstack's system user (tools/devstack.py, `devstack-pg`: no home, nologin), in a run
dir of its own (default .run/pgbouncer/) owned by that user and 0700: its config, auth file,
pid file and log. On a free port of 127.0.0.1, no Unix socket.

The config, and why:
- `pool_mode = transaction`: a server connection per transaction, which is what lets
  replicas x pool sizes of clients share a few PostgreSQL backends. The mesh keeps no
  session state on pooled connections (meshkit/db.py: the schema comes from a role).
- `* = host=... port=...`: every database name is passed on, so a test run's fresh database
  works without a reload, under the client's own user name: the per-schema roles
  (meshkit.db.schema_role) each get their server connections, started in their schema.
- `auth_type = trust` with `auth_user` + the default `auth_query` (pg_shadow): locally the
  PostgreSQL it fronts trusts 127.0.0.1 too, so a password check here would add nothing;
  the roles are made at run time, so they cannot be listed in the auth file beforehand, and
  auth_query looks each one up on the server (which also refuses a role that does not
  exist). `auth_type = any` would not do: it logs every client in as one configured user,
  which would lose the per-schema roles. A deployment with passwords would use scram and
  the auth file instead; this tool is for tests and local runs.
- `ignore_startup_parameters` is left empty on purpose: a client sending `search_path` in
  its startup packet is refused ("unsupported startup parameter") instead of being let in
  to run in the wrong schema.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script too (`python tools/pgbouncer.py`)
    sys.path.insert(0, str(ROOT))

from tools import devstack  # noqa: E402  (after the path fix above)

DEFAULT_RUN_DIR = ROOT / ".run" / "pgbouncer"
WAIT_S = 15.0


class PgBouncerError(RuntimeError):
    pass


def binary() -> str:
    """The pgbouncer program; installed with apt-get when missing and we are root."""
    if found := shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin"):
        return found
    if os.geteuid() != 0:
        raise PgBouncerError("pgbouncer is not installed: `sudo apt-get install -y pgbouncer` "
                             "(Debian's, 1.18 or later)")
    print("pgbouncer: apt-get install -y pgbouncer", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-q", "pgbouncer"], env=env,
                          stdout=subprocess.DEVNULL)
    if done.returncode != 0 or not Path("/usr/sbin/pgbouncer").exists():
        raise PgBouncerError("apt-get install -y pgbouncer failed (try `apt-get update` first)")
    return "/usr/sbin/pgbouncer"


# The default mesh's service and admin ports (meshkit.settings.DEFAULT_PORTS, + 100): a
# PgBouncer there would keep `make up` from starting.
MESH_PORTS = frozenset(range(50051, 50056)) | frozenset(range(50151, 50156))


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in MESH_PORTS:
            return port


def _quote_ini(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def config(server_host: str, server_port: int, port: int, run_dir: Path, user: str) -> str:
    return f"""\
; written by tools/pgbouncer.py (see its docstring for why each setting)
[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
pool_mode = transaction
auth_type = trust
auth_file = {run_dir / 'userlist.txt'}
auth_user = {user}
admin_users = {user}
stats_users = {user}
; refused, never ignored: search_path especially (meshkit/db.py)
ignore_startup_parameters =
max_client_conn = 2000
default_pool_size = 10
max_db_connections = 60
; a test run's database disappears after the run: forget its pools soon after
autodb_idle_timeout = 30
server_idle_timeout = 60
logfile = {run_dir / 'pgbouncer.log'}
pidfile = {run_dir / 'pgbouncer.pid'}
"""


def _pid(run_dir: Path) -> int | None:
    pid = devstack.read_int(run_dir / "pgbouncer.pid")
    return pid if pid and devstack.alive(pid, "pgbouncer") else None


def _prepare(run_dir: Path) -> devstack.pwd.struct_passwd | None:
    """run_dir made (0700), owned by the user PgBouncer runs as (as root: devstack's)."""
    pw = devstack.pg_os_user()
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    if pw:
        for d in run_dir.parents:
            if d.exists() and not d.stat().st_mode & 0o001:
                raise PgBouncerError(f"{d} is not searchable by other users, so {pw.pw_name} could not reach "
                                     f"{run_dir}; pass a run dir under one that is")
        os.chown(run_dir, pw.pw_uid, pw.pw_gid)
    return pw


def start(database_url: str, run_dir: Path = DEFAULT_RUN_DIR) -> str:
    """Start PgBouncer in front of the PostgreSQL of `database_url` (stopping one this run dir
    already has); returns the URL reaching the same database and user through it."""
    program = binary()
    stop(run_dir)
    pw = _prepare(run_dir)
    u = urlsplit(database_url)
    user, password = u.username or "postgres", u.password or ""
    port = free_port()
    files = {
        "pgbouncer.ini": config(u.hostname or "127.0.0.1", u.port or 5432, port, run_dir, user),
        # The auth_user's line: how PgBouncer logs in to run auth_query (and as that user).
        "userlist.txt": f"{_quote_ini(user)} {_quote_ini(password)}\n",
        "pgbouncer.log": "",
    }
    for name, text in files.items():
        path = run_dir / name
        path.write_text(text)
        path.chmod(0o600)
        if pw:
            os.chown(path, pw.pw_uid, pw.pw_gid)
    kw: dict[str, object] = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []} if pw else {}
    done = subprocess.run([program, "-d", str(run_dir / "pgbouncer.ini")], cwd=run_dir,
                          start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise PgBouncerError(f"pgbouncer did not start: {done.stderr.strip()}\n{_tail(run_dir)}")
    deadline = time.monotonic() + WAIT_S
    while not devstack.pg_answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise PgBouncerError(f"pgbouncer did not answer on 127.0.0.1:{port} within {WAIT_S:.0f}s\n"
                                 + _tail(run_dir))
        time.sleep(0.1)
    host = u.netloc.rpartition("@")
    login = host[0] + "@" if host[1] else ""
    url = urlunsplit((u.scheme, f"{login}127.0.0.1:{port}", u.path, u.query, u.fragment))
    (run_dir / "pgbouncer.env").write_text(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env_for(url, database_url).items()))
    return url


def env_for(pgbouncer_url: str, direct_url: str) -> dict[str, str]:
    """What the mesh and its tests read to go through PgBouncer: DATABASE_URL through it,
    DATABASE_POOLER saying so (meshkit.db.connect_options), DATABASE_DIRECT_URL for the
    session advisory lock that cannot go through it."""
    return {"DATABASE_URL": pgbouncer_url, "DATABASE_POOLER": "pgbouncer", "DATABASE_DIRECT_URL": direct_url}


def _tail(run_dir: Path, lines: int = 20) -> str:
    try:
        return "\n".join((run_dir / "pgbouncer.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(run_dir: Path = DEFAULT_RUN_DIR) -> bool:
    """Stop the PgBouncer of `run_dir` (SIGTERM: immediate shutdown); whether one ran."""
    pid = _pid(run_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT_S
    while devstack.alive(pid, "pgbouncer"):
        if time.monotonic() > deadline:
            raise PgBouncerError(f"pgbouncer (pid {pid}) still running after {WAIT_S:.0f}s")
        time.sleep(0.05)
    (run_dir / "pgbouncer.env").unlink(missing_ok=True)
    return True


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] not in ("start", "stop") or len(args) > 2:
        sys.exit(__doc__)
    run_dir = Path(args[1]).resolve() if len(args) == 2 else DEFAULT_RUN_DIR
    try:
        if args[0] == "start":
            url = start(os.environ.get("DATABASE_URL") or devstack.DEFAULT_DB, run_dir)
            print(f"pgbouncer: transaction pooling on {devstack.redact_url(url)} (run dir {run_dir})",
                  file=sys.stderr)
            for key, value in env_for(url, os.environ.get("DATABASE_URL") or devstack.DEFAULT_DB).items():
                masked = value if key == "DATABASE_POOLER" else devstack.redact_url(value)
                print(f"export {key}={shlex.quote(masked)}")  # the file keeps passwords
        elif stop(run_dir):
            print(f"pgbouncer: stopped ({run_dir})", file=sys.stderr)
        else:
            print(f"pgbouncer: none running in {run_dir}", file=sys.stderr)
    except PgBouncerError as exc:
        sys.exit(f"pgbouncer: {exc}")


if __name__ == "__main__":
    main()
