#!/usr/bin/env python3
"""A mesh of one checkout's code on private ports, for comparing two trees side by side.

    python -m bench.private_mesh up --tree /work/main --run-dir /tmp/mesh-main
    set -a && . /tmp/mesh-main/mesh.env && set +a
    python -m bench.view_cost --run-dir /tmp/mesh-main
    python -m bench.private_mesh down --tree /work/main --run-dir /tmp/mesh-main

`up` gives the mesh its own database (created if missing, named after the run directory),
its own Redis key prefix, its own certificates and free ports for every listener (gRPC,
admin, metrics), writes them to RUN_DIR/mesh.env and starts the five services with the
tree's own tools/meshctl.py (cwd and PYTHONPATH of that tree), so the services run that
tree's code while the bench runs this one's. The default ports (`make up`) are never used.
`down` stops them (SIGTERM, as `make down` does) and leaves the database for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from meshkit.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tools import certs as certs_tool
from tools import meshctl
from tools.certs import CertDir

ENV_FILE = "mesh.env"
# Few connections: two private meshes and other sessions' suites share one PostgreSQL server.
POOL_SIZE = "6"
_UP = (
    "import json, sys; from pathlib import Path; from tools import meshctl as m; "
    "m.up(json.load(open(sys.argv[1])), m.Layout(Path(sys.argv[2])))"
)
_DOWN = ("import sys; from pathlib import Path; from tools import meshctl as m; "
         "m.down(m.Layout(Path(sys.argv[1])))")


def database_name(run_dir: Path) -> str:
    return "bench_" + re.sub(r"[^a-z0-9_]", "_", run_dir.name.lower())[:40]


async def ensure_database(base_url: str, name: str) -> str:
    conn = await asyncpg.connect(base_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base_url.rsplit("/", 1)[0] + "/" + name


def mesh_env(run_dir: Path, database_url: str, redis_url: str) -> dict[str, str]:
    certs = CertDir(run_dir / "certs")
    certs_tool.ensure(certs)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MESH_KEY_PREFIX": f"bench-{run_dir.name}-{uuid.uuid4().hex[:6]}",
        "MESH_ENV": "dev",
        "MESH_CERTS_DIR": str(certs.path),
    }
    for name in ("ACCOUNT", "WITHDRAW", "GATEWAY", "RECON"):
        env[f"{name}_DB_POOL_SIZE"] = POOL_SIZE
    meshctl.on_free_ports(env, meshctl.SERVICES)
    for service, port in zip(meshctl.SERVICES, meshctl.free_ports(len(meshctl.SERVICES)), strict=True):
        env[f"{service.upper()}_METRICS_PORT"] = str(port)
    return env


def up(tree: Path, run_dir: Path) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    base = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    database_url = asyncio.run(ensure_database(base, database_name(run_dir)))
    env = mesh_env(run_dir, database_url, os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    (run_dir / "mesh.json").write_text(json.dumps(env))
    (run_dir / ENV_FILE).write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
    child = {**os.environ, **env, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", _UP, str(run_dir / "mesh.json"), str(run_dir)],
                          cwd=tree, env=child, check=False)
    print(f"mesh of {tree} on private ports: {run_dir / ENV_FILE}")
    return done.returncode


def down(tree: Path, run_dir: Path) -> int:
    child = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", _DOWN, str(run_dir)], cwd=tree, env=child,
                          check=False).returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("up", "down"))
    p.add_argument("--tree", type=Path, default=meshctl.ROOT, help="checkout whose code the services run")
    p.add_argument("--run-dir", type=Path, required=True, help="logs, pidfiles, certificates, mesh.env")
    args = p.parse_args()
    tree, run_dir = args.tree.resolve(), args.run_dir.resolve()
    if run_dir == meshctl.RUN.resolve():
        raise SystemExit("--run-dir must not be the default mesh's .run")
    return up(tree, run_dir) if args.command == "up" else down(tree, run_dir)


if __name__ == "__main__":
    sys.exit(main())
