"""A real local Redis Cluster for tests: Debian's redis-server in cluster mode, 3 masters with
one replica each by default, on free ports, in a private directory.

    python -m tools.redis_cluster run [--dir D] -- CMD ...   start, run CMD with REDIS_URL
                                                             (a node), REDIS_CLUSTER=1 and
                                                             REDIS_CLUSTER_DIR set, stop
                                                             (also when CMD fails)
    python -m tools.redis_cluster start|stop|status [--dir D]

The functions (start, stop, load, kill_primary, wait_failover) are what tests use to kill
the master that owns a key's slot and wait for its replica to take over. Persistence is off
(as in tools/devstack.py): a node that restarts comes back empty.

Failover timing: a master is judged failed after NODE_TIMEOUT_MS without an answer, then its
replica is elected. That is longer than the payout limiter's window (1 s plus margin), so
limiter writes the replica had not yet received cannot let more calls through: by the time
the replica serves, every call they counted has left the window (ARCHITECTURE.md, "Redis
Cluster failover")."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".run" / "redis-cluster"
STATE = "cluster.json"
SERVER = "/usr/bin/redis-server"
CLI = "/usr/bin/redis-cli"
HOST = "127.0.0.1"
# Above the limiter's window (see the docstring), short enough for a test to wait for.
NODE_TIMEOUT_MS = 1500
INSTALL_HINT = "install it with: apt-get install redis-server (Debian's package brings redis-cli too)"


@dataclass
class Node:
    port: int
    pid: int

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass
class Cluster:
    directory: Path
    nodes: list[Node]

    @property
    def url(self) -> str:
        """Any node will do: a cluster client learns the others from it."""
        return f"redis://{self.nodes[0].address}/0"

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "1", "REDIS_CLUSTER_DIR": str(self.directory)}


class ClusterError(RuntimeError):
    pass


def _check_installed() -> None:
    for binary in (SERVER, CLI):
        if not os.access(binary, os.X_OK):
            raise ClusterError(f"{binary} not found: {INSTALL_HINT}")


def _free_port() -> int:
    """A port free for the node and for its cluster bus (port + 10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port + 10000 >= 65536:
            continue
        with socket.socket() as bus:
            try:
                bus.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise ClusterError("no free port pair (port, port + 10000) found")


def cli(port: int, *args: str, timeout: float = 10) -> str:
    done = subprocess.run([CLI, "-h", HOST, "-p", str(port), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip()
        raise ClusterError(f"redis-cli -p {port} {' '.join(args)}: {said}")
    return done.stdout


def _spawn(directory: Path, port: int) -> int:
    data = directory / str(port)
    data.mkdir(parents=True, exist_ok=True)
    args = [SERVER, "--port", str(port), "--bind", HOST, "--protected-mode", "no",
            "--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # A replica however long out of touch may still take over: the test kills masters
            # on a busy box, and a refused election would leave the slots without a master.
            "--cluster-replica-validity-factor", "0",
            # DEBUG SLEEP from this host only: lag_replica stalls a replica with it.
            "--enable-debug-command", "local",
            "--appendonly", "no", "--save", "", "--dir", str(data),
            "--logfile", str(data / "redis.log"), "--daemonize", "no"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def _wait(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (ClusterError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _state_ok(port: int) -> bool:
    return "cluster_state:ok" in cli(port, "cluster", "info")


def start(directory: Path = DEFAULT_DIR, *, masters: int = 3, replicas: int = 1,
          timeout: float = 60) -> Cluster:
    """Start masters * (1 + replicas) nodes, join them with `redis-cli --cluster create` and
    wait until every node says cluster_state:ok. A cluster left in `directory` is stopped first."""
    _check_installed()
    directory = directory.resolve()  # redis-server changes into --dir: paths must not be relative
    if (directory / STATE).exists():
        stop(directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    nodes: list[Node] = []
    cluster = Cluster(directory, nodes)
    try:
        for _ in range(masters * (1 + replicas)):
            port = _free_port()
            nodes.append(Node(port, _spawn(directory, port)))
            _save(cluster)
        for node in nodes:
            _wait(f"redis-server on {node.port}", lambda n=node: cli(n.port, "ping").strip() == "PONG",
                  timeout)
        cli(nodes[0].port, "--cluster", "create", *(n.address for n in nodes),
            "--cluster-replicas", str(replicas), "--cluster-yes", timeout=timeout)
        for node in nodes:
            _wait(f"cluster_state:ok on {node.port}", lambda n=node: _state_ok(n.port), timeout)
        # Every master must know its replica before a test may kill it.
        _wait("every master to have its replicas", lambda: _replicated(cluster, replicas), timeout)
    except BaseException:
        stop(directory)
        raise
    return cluster


def _replicated(cluster: Cluster, replicas: int) -> bool:
    """Every master has `replicas` replicas in sync (`state=online`: the first full sync done)."""
    rows = _nodes_table(cluster)
    for row in rows:
        if "master" not in row["flags"] or "fail" in row["flags"]:
            continue
        port = row["address"].rsplit(":", 1)[1]
        if cli(int(port), "info", "replication").count("state=online") < replicas:
            return False
    return True


def _save(cluster: Cluster) -> None:
    (cluster.directory / STATE).write_text(json.dumps([asdict(n) for n in cluster.nodes]))


def load(directory: Path) -> Cluster:
    nodes = [Node(**row) for row in json.loads((directory / STATE).read_text())]
    return Cluster(directory, nodes)


def _alive(pid: int) -> bool:
    """Running, not a zombie: a node killed by a test stays one until `run` reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(directory: Path = DEFAULT_DIR) -> None:
    """SIGTERM every node this directory started (SIGKILL after 5 s); the data goes with them."""
    if not (directory / STATE).exists():
        return
    cluster = load(directory)
    for node in cluster.nodes:
        if _alive(node.pid):
            os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for node in cluster.nodes:
        while _alive(node.pid) and time.monotonic() < deadline:
            _reap(node.pid)
            time.sleep(0.05)
        if _alive(node.pid):
            os.kill(node.pid, signal.SIGKILL)
        _reap(node.pid)
    (directory / STATE).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect a node this process started (a zombie answers kill(pid, 0) as alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _nodes_table(cluster: Cluster) -> list[dict[str, str]]:
    """CLUSTER NODES as seen by the first node that answers."""
    for node in cluster.nodes:
        if not _alive(node.pid):
            continue
        try:
            text = cli(node.port, "cluster", "nodes")
        except (ClusterError, subprocess.TimeoutExpired):
            continue
        rows = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            rows.append({"id": parts[0], "address": parts[1].split("@")[0], "flags": parts[2],
                         "master": parts[3], "slots": " ".join(parts[8:])})
        return rows
    raise ClusterError("no node of the cluster answers")


def slot_of(cluster: Cluster, key: str) -> int:
    for node in cluster.nodes:
        if _alive(node.pid):
            return int(cli(node.port, "cluster", "keyslot", key).strip())
    raise ClusterError("no node of the cluster answers")


def owner_of(cluster: Cluster, slot: int) -> Node:
    """The master serving `slot` now (as the cluster's view says)."""
    for row in _nodes_table(cluster):
        if "master" not in row["flags"] or "fail" in row["flags"]:
            continue
        for part in row["slots"].split():
            low, _, high = part.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                port = int(row["address"].rsplit(":", 1)[1])
                return next(n for n in cluster.nodes if n.port == port)
    raise ClusterError(f"no master serves slot {slot}")


def replica_of(cluster: Cluster, master: Node) -> Node:
    rows = _nodes_table(cluster)
    master_id = next(r["id"] for r in rows if r["address"] == master.address)
    row = next(r for r in rows if r["master"] == master_id and "fail" not in r["flags"])
    port = int(row["address"].rsplit(":", 1)[1])
    return next(n for n in cluster.nodes if n.port == port)


def lag_replica(cluster: Cluster, key: str, seconds: float) -> subprocess.Popen[bytes]:
    """Make the replica of `key`'s master fall behind: it sleeps (DEBUG SLEEP) for `seconds`
    and the master drops its replication link, so every write the master acknowledges from
    now on is one the replica lacks until it reconnects (it cannot while asleep). Kill the
    master meanwhile and the replica takes over without them, as a lagging replica would.
    Returns the sleeping redis-cli (wait for it)."""
    master = owner_of(cluster, slot_of(cluster, key))
    replica = replica_of(cluster, master)
    sleeper = subprocess.Popen([CLI, "-h", HOST, "-p", str(replica.port), "debug", "sleep", str(seconds)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)  # the replica is asleep before its link drops: it cannot reconnect at once
    cli(master.port, "client", "kill", "type", "replica")
    return sleeper


def kill_primary(cluster: Cluster, key: str) -> Node:
    """SIGKILL the master that owns `key`'s slot: no goodbye to its replica, which has what
    had reached it by then and nothing after."""
    victim = owner_of(cluster, slot_of(cluster, key))
    os.kill(victim.pid, signal.SIGKILL)
    _reap(victim.pid)
    return victim


def wait_failover(cluster: Cluster, key: str, gone: Node, timeout: float = 60) -> Node:
    """Wait until another node serves `key`'s slot and the cluster is ok again; the new master."""
    slot = slot_of(cluster, key)
    found: list[Node] = []

    def moved() -> bool:
        owner = owner_of(cluster, slot)
        if owner.port == gone.port:
            return False
        found[:] = [owner]
        return all(_state_ok(n.port) for n in cluster.nodes if _alive(n.pid))

    _wait(f"a replica to take over slot {slot}", moved, timeout)
    return found[0]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args:
        at = args.index("--")
        args, command = args[:at], args[at + 1:]
    p = argparse.ArgumentParser(prog="python -m tools.redis_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["run", "start", "stop", "status"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="private directory of the nodes")
    p.add_argument("--masters", type=int, default=3)
    p.add_argument("--replicas", type=int, default=1)
    o = p.parse_args(args)
    o.dir = o.dir.resolve()
    try:
        if o.action == "stop":
            stop(o.dir)
            return 0
        if o.action == "status":
            cluster = load(o.dir)
            for row in _nodes_table(cluster):
                print(row["address"], row["flags"], row["slots"])
            return 0
        started = time.monotonic()
        cluster = start(o.dir, masters=o.masters, replicas=o.replicas)
        print(f"redis cluster: {len(cluster.nodes)} nodes ({o.masters} masters) up in "
              f"{time.monotonic() - started:.1f}s at {cluster.url}", file=sys.stderr)
        if o.action == "start":
            for key, value in cluster.env().items():
                print(f"{key}={value}")
            return 0
        if not command:
            p.error("run needs a command after --")
        try:
            return subprocess.run(command, env={**os.environ, **cluster.env()}, check=False).returncode
        finally:
            stop(o.dir)
    except ClusterError as exc:
        print(f"redis_cluster: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
