#!/usr/bin/env python3
"""Run the five services as background processes.

    python tools/meshctl.py up [--replicas N] | down | status | restart <svc> | kill <svc>

`up` starts them in dependency order with `.venv/bin/python -m <svc>`, configured from
the environment (DATABASE_URL, REDIS_URL, MESH_KEY_PREFIX, <SVC>_PORT, <SVC>_ADDR, ...),
logs to .run/logs/<svc>.log, pids in .run/pids/<svc>.pid, and waits until each answers
grpc.health.v1 SERVING. Services already running (pid alive and SERVING) are left alone.
`up --replicas N` (`make up REPLICAS=N`) starts N of each: replica k (from 0) of a service
listens on its port + 2000*k (admin port + 100 and metrics port + 1000 stay clear of the
next replica's), is named `<svc>-k` in its pid and log files (replica 0 keeps the plain
names: N=1 is exactly one mesh as before), and every service is told all of its peers'
replicas in `<SVC>_ADDRS` (dialled round robin, meshkit.transport). `down`, `status`,
`restart` and `kill` act on every replica whose pidfile they find.
`down` sends SIGTERM (graceful drain) and SIGKILLs what is still alive after the grace
period. `kill` is a bare SIGKILL, for drills.

The functions are the API for tests and drill tooling: pass an env and a Layout (run
directory) to run a second, isolated mesh beside the default one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit.dialer import Dialer
from meshkit.pki import CertDir

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"

# Dependency order: a service's peers start before it (recon reads everyone).
SERVICES: tuple[str, ...] = ("gateway_mock", "account_svc", "withdraw_svc", "payout_svc", "recon_svc")
DEFAULT_PORTS: dict[str, int] = {
    "account_svc": 50051,
    "withdraw_svc": 50052,
    "payout_svc": 50053,
    "recon_svc": 50054,
    "gateway_mock": 50055,
}
# Replica k listens at port + REPLICA_PORT_STEP * k: clear of port + 100 (admin) and
# port + 1000 (metrics, meshkit.metrics) of every replica.
REPLICA_PORT_STEP = 2000
HEALTH_TIMEOUT_S = 30.0
# Services drain for MESH_SHUTDOWN_GRACE_S (default 10 s); a little more before SIGKILL.
STOP_MARGIN_S = 5.0
LOG_TAIL_LINES = 40

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
UNREACHABLE = "UNREACHABLE"

log = logging.getLogger("mesh")

# Processes started by this interpreter: waiting on them reaps them and yields exit codes.
_children: dict[int, subprocess.Popen[bytes]] = {}


class MeshError(Exception):
    """A service did not come up or go down as asked; the message says which and why."""


@dataclass(frozen=True)
class Layout:
    """Where one mesh keeps its logs and pidfiles."""

    run_dir: Path = RUN

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pids(self) -> Path:
        return self.run_dir / "pids"

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.pids / f"{service}.pid"


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    pid: int | None
    address: str
    health: str


def base_of(instance: str) -> str:
    """The service an instance name runs: `withdraw_svc-1` -> `withdraw_svc`."""
    name, dash, index = instance.rpartition("-")
    return name if dash and index.isdigit() else instance


def replica_of(instance: str) -> int:
    """The replica index of an instance name (0 for the plain service name)."""
    _, dash, index = instance.rpartition("-")
    return int(index) if dash and index.isdigit() else 0


def instance_name(service: str, replica: int) -> str:
    """Replica 0 keeps the service's own name (its pid and log files are those of one mesh)."""
    return service if replica == 0 else f"{service}-{replica}"


def _check_service(service: str) -> None:
    if base_of(service) not in SERVICES:
        raise MeshError(f"unknown service {service!r}; one of {', '.join(SERVICES)} "
                        "(a replica: <svc>-<k>)")


def service_env(overrides: Mapping[str, str] | None = None, replicas: int = 1) -> dict[str, str]:
    """os.environ plus overrides, with this checkout and its gen/ first on PYTHONPATH.

    The venv's editable install would find the packages too, but it points at one checkout and
    a venv may serve several (worktrees): the services run the code of the meshctl that starts them.
    """
    env = dict(os.environ)
    env.update(overrides or {})
    paths = [str(ROOT), str(ROOT / "gen")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    # Peers find each other by <SVC>_ADDR only: a port moved by <SVC>_PORT alone must move
    # the address too, or the others would dial the default port.
    for service in SERVICES:
        upper = service.upper()
        if env.get(f"{upper}_PORT") and not env.get(f"{upper}_ADDR"):
            env[f"{upper}_ADDR"] = f"127.0.0.1:{env[f'{upper}_PORT']}"
        if env.get(f"{upper}_ADMIN_PORT") and not env.get(f"{upper}_ADMIN_ADDR"):
            env[f"{upper}_ADMIN_ADDR"] = f"127.0.0.1:{env[f'{upper}_ADMIN_PORT']}"
        if replicas > 1 and not env.get(f"{upper}_ADDRS"):
            # Every replica, for the peers' round robin (replica 0 is <SVC>_ADDR as well).
            env[f"{upper}_ADDRS"] = ",".join(
                addr_of(instance_name(service, k), env) for k in range(replicas))
            if env.get(f"{upper}_ADMIN_ADDR") and replicas > 1:
                # One admin address would pin every admin call to replica 0.
                env[f"{upper}_ADMIN_ADDR"] = ",".join(
                    admin_addr_of(instance_name(service, k), env) for k in range(replicas))
    return env


def replica_env(instance: str, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of one replica: replica k > 0 moves its own ports by k steps."""
    env = dict(env)
    k = replica_of(instance)
    if k == 0:
        return env
    upper = base_of(instance).upper()
    # Both from the service's own settings, before either is moved.
    port, admin = port_of(instance, env), admin_addr_of(instance, env).rpartition(":")[2]
    env[f"{upper}_PORT"], env[f"{upper}_ADMIN_PORT"] = str(port), admin
    return env


def insecure(env: Mapping[str, str]) -> bool:
    return (env.get("MESH_INSECURE") or "").strip().lower() in ("1", "true", "yes", "on")


def own_certs(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """MESH_TLS_CA/CERT/KEY for `service`: its own certificate in MESH_CERTS_DIR (default
    .run/certs), never whatever MESH_TLS_* this shell has for its own grpcurl."""
    if insecure(env):
        return {}
    certs = CertDir.from_env(env)
    if not certs.has(service) or not certs.ca.is_file():
        raise MeshError(f"{service}: no certificate in {certs.path}: run `make certs` "
                        "(or set MESH_INSECURE=1 for a plaintext mesh)")
    return {"MESH_TLS_CA": str(certs.ca), "MESH_TLS_CERT": str(certs.cert(service)),
            "MESH_TLS_KEY": str(certs.key(service))}


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1: every socket stays bound until all are picked."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def on_free_ports(env: dict[str, str], services: Sequence[str]) -> None:
    """Each service on a free port, and its admin listener on another free one: left to its
    default (port + 100) it could land on a port something else holds (a private Redis)."""
    ports = free_ports(2 * len(services))
    for service, port, admin in zip(services, ports[::2], ports[1::2], strict=True):
        upper = service.upper()
        env[f"{upper}_PORT"] = str(port)
        env[f"{upper}_ADDR"] = f"127.0.0.1:{port}"
        env[f"{upper}_ADMIN_PORT"] = str(admin)
        env[f"{upper}_ADMIN_ADDR"] = f"127.0.0.1:{admin}"


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def on_free_replica_ports(env: dict[str, str], services: Sequence[str], replicas: int) -> None:
    """Each service on a free port whose replicas' ports (port + 2000*k) and admin ports
    (each + 100) are free too; the admin ports are left to that default, so that tools find
    every replica's admin listener from the address list alone."""
    for service in services:
        while True:
            (port,) = free_ports(1)
            wanted = [port + REPLICA_PORT_STEP * k + extra for k in range(replicas) for extra in (0, 100)]
            if all(p < 65536 and _bindable(p) for p in wanted[1:]):
                break
        upper = service.upper()
        env[f"{upper}_PORT"] = str(port)
        env[f"{upper}_ADDR"] = f"127.0.0.1:{port}"


def port_of(service: str, env: Mapping[str, str]) -> int:
    """The port of a service (or of replica `<svc>-k`: the service's port + k steps)."""
    base = base_of(service)
    raw = env.get(f"{base.upper()}_PORT", "")
    return (int(raw) if raw else DEFAULT_PORTS[base]) + REPLICA_PORT_STEP * replica_of(service)


def _first(address: str) -> str:
    return address.split(",")[0].strip()


def addr_of(service: str, env: Mapping[str, str]) -> str:
    """Where clients reach one instance: <SVC>_ADDR (its first address), else localhost on
    its port; replica k: that host on port + k steps."""
    base, k = base_of(service), replica_of(service)
    given = env.get(f"{base.upper()}_ADDR")
    if not given:
        return f"127.0.0.1:{port_of(service, env)}"
    host, _, port = _first(given).rpartition(":")
    return f"{host}:{int(port) + REPLICA_PORT_STEP * k}"


def admin_addr_of(service: str, env: Mapping[str, str]) -> str:
    """Where one instance's admin services listen: <SVC>_ADMIN_ADDR (its first address;
    replica k: port + k steps), else its address's port + 100."""
    base, k = base_of(service), replica_of(service)
    given = env.get(f"{base.upper()}_ADMIN_ADDR")
    if not given:
        host, _, port = addr_of(service, env).rpartition(":")
        return f"{host}:{int(port) + 100}"
    host, _, port = _first(given).rpartition(":")
    return f"{host}:{int(port) + REPLICA_PORT_STEP * k}"


def _channel(address: str, env: Mapping[str, str]) -> grpc.Channel:
    """Health checks go over mutual TLS too, as an operator (any identity may ask)."""
    dialer = Dialer.from_env(env)
    return dialer.sync_channel(address, dialer.identity_for("/grpc.health.v1.Health/Check"))


def health(address: str, env: Mapping[str, str] | None = None, timeout: float = 1.0) -> str:
    """SERVING, NOT_SERVING (or another health status name), or UNREACHABLE."""
    with _channel(address, env if env is not None else os.environ) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return UNREACHABLE
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1.0).close()
    except OSError:
        return False
    return True


def pid_alive(pid: int, service: str) -> bool:
    """The pid runs `-m <service>` (guards against pid reuse; a zombie counts as dead)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return base_of(service).encode() in argv


def _recorded_pid(service: str, layout: Layout) -> int | None:
    try:
        return int(layout.pid_file(service).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(service: str, layout: Layout = Layout()) -> int | None:
    """The pid from its pidfile if that process still runs the service."""
    pid = _recorded_pid(service, layout)
    if pid is None:
        return None
    if pid in _children:
        return pid if _children[pid].poll() is None else None
    return pid if pid_alive(pid, service) else None


def log_tail(service: str, layout: Layout = Layout(), lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = layout.log_file(service).read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def python_bin() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def start(service: str, env: Mapping[str, str], layout: Layout = Layout()) -> subprocess.Popen[bytes]:
    """Launch one service in the background (no waiting); records its pidfile."""
    _check_service(service)
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.pids.mkdir(parents=True, exist_ok=True)
    env = {**replica_env(service, env), **own_certs(base_of(service), env)}
    with layout.log_file(service).open("ab") as out:
        out.write(log_line(service, f"meshctl: starting {service}").encode())
        out.flush()
        # Own session: a Ctrl-C in the terminal that ran `make up` does not reach it.
        proc = subprocess.Popen(
            [python_bin(), "-m", base_of(service)], cwd=ROOT, env=dict(env),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    _children[proc.pid] = proc
    layout.pid_file(service).write_text(f"{proc.pid}\n")
    return proc


def log_line(service: str, message: str, level: str = "INFO") -> str:
    """A line for a service's log file in the services' own JSON format (meshkit.logs), so
    that every line of the file parses; this module stays free of the services' imports."""
    now = time.time()
    line = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
        "level": level,
        "service": service,
        "logger": "meshctl",
        "msg": message,
    }
    return json.dumps(line, ensure_ascii=False) + "\n"


def _note(service: str, layout: Layout, message: str, level: str = "INFO") -> None:
    """What meshctl did to a service that the service cannot log itself (a SIGKILL)."""
    with contextlib.suppress(OSError), layout.log_file(service).open("a") as out:
        out.write(log_line(service, message, level))


def _exited(pid: int, service: str) -> tuple[bool, int | None]:
    """(gone, exit code); the code is known only for processes this interpreter started."""
    proc = _children.get(pid)
    if proc is not None:
        code = proc.poll()
        return code is not None, code
    return not pid_alive(pid, service), None


def wait_serving(service: str, pid: int, env: Mapping[str, str], layout: Layout = Layout(),
                 timeout: float = HEALTH_TIMEOUT_S) -> float:
    """Block until the service answers SERVING; returns seconds waited. On failure
    (it exited, or timeout) raises MeshError carrying its log tail."""
    address = addr_of(service, env)
    started = time.monotonic()
    deadline = started + timeout
    state = UNREACHABLE
    while True:
        gone, code = _exited(pid, service)
        if gone:
            raise MeshError(
                f"{service} (pid {pid}) exited with code {code} before serving\n"
                f"--- tail of {layout.log_file(service)} ---\n{log_tail(service, layout)}"
            )
        state = health(address, env, timeout=1.0)
        if state == SERVING:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise MeshError(
                f"{service} (pid {pid}) at {address} not SERVING after {timeout:.0f}s (health: {state})\n"
                f"--- tail of {layout.log_file(service)} ---\n{log_tail(service, layout)}"
            )
        time.sleep(0.1)


def ensure(service: str, env: Mapping[str, str], layout: Layout = Layout(),
           timeout: float = HEALTH_TIMEOUT_S) -> int:
    """Start `service` unless it already runs; wait for SERVING. Returns its pid."""
    _check_service(service)
    address = addr_of(service, env)
    pid = running_pid(service, layout)
    if pid is not None:
        wait_serving(service, pid, env, layout, timeout)
        log.info("%-13s already running  pid %-7d %s", service, pid, address)
        return pid
    if _listening(address):
        # gRPC sets SO_REUSEPORT: a second server on a taken port would start "fine" and
        # then share the traffic with whatever already listens there.
        raise MeshError(
            f"{service}: {address} is already in use by a process mesh.py did not start "
            f"(no live pid in {layout.pid_file(service)}); stop it, or set {service.upper()}_PORT"
        )
    proc = start(service, env, layout)
    try:
        waited = wait_serving(service, proc.pid, env, layout, timeout)
    except MeshError:
        stop(service, layout, grace=2.0)
        raise
    log.info("%-13s started          pid %-7d %s  SERVING after %.1fs", service, proc.pid, address, waited)
    return proc.pid


def up(env: Mapping[str, str] | None = None, layout: Layout = Layout(),
       services: Iterable[str] = SERVICES, timeout: float = HEALTH_TIMEOUT_S,
       replicas: int = 1) -> dict[str, int]:
    """Bring every service up in order, each SERVING before the next starts; `replicas`
    of each (keys: instance names, `<svc>` and `<svc>-k`)."""
    if replicas < 1:
        raise MeshError(f"replicas must be at least 1, not {replicas}")
    full = service_env(env, replicas)
    return {instance_name(service, k): ensure(instance_name(service, k), full, layout, timeout)
            for service in services for k in range(replicas)}


def instances(service: str, layout: Layout = Layout()) -> list[str]:
    """The service and every replica of it with a pidfile, replica 0 first."""
    found = {service}
    if layout.pids.is_dir():
        found |= {p.stem for p in layout.pids.glob(f"{service}-*.pid") if base_of(p.stem) == service}
    return sorted(found, key=replica_of)


def stop_grace(env: Mapping[str, str] | None = None) -> float:
    source = env if env is not None else os.environ
    return float(source.get("MESH_SHUTDOWN_GRACE_S") or 10.0) + STOP_MARGIN_S


def _wait_gone(pid: int, service: str, timeout: float) -> tuple[bool, int | None]:
    deadline = time.monotonic() + timeout
    while True:
        gone, code = _exited(pid, service)
        if gone or time.monotonic() >= deadline:
            return gone, code
        time.sleep(0.05)


def stop(service: str, layout: Layout = Layout(), grace: float | None = None) -> int | None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit code when this
    interpreter started it (else None), or -9 when it had to be killed. No-op when not
    running."""
    _check_service(service)
    pid = _recorded_pid(service, layout)
    if pid is None or running_pid(service, layout) is None:
        layout.pid_file(service).unlink(missing_ok=True)
        # Our child that already died: report how it ended rather than nothing.
        proc = _children.pop(pid, None) if pid is not None else None
        return proc.poll() if proc is not None else None
    grace = stop_grace() if grace is None else grace
    os.kill(pid, signal.SIGTERM)
    gone, code = _wait_gone(pid, service, grace)
    if not gone:
        log.warning("%s (pid %d) still running after %.0fs: SIGKILL", service, pid, grace)
        os.kill(pid, signal.SIGKILL)
        _note(service, layout, f"meshctl: pid {pid} still running {grace:.0f}s after SIGTERM: SIGKILL",
              "WARNING")
        _wait_gone(pid, service, 5.0)
        code = -signal.SIGKILL
    _children.pop(pid, None)
    layout.pid_file(service).unlink(missing_ok=True)
    log.info("%-13s stopped          pid %d%s", service, pid, "" if code is None else f"  exit {code}")
    return code


def down(layout: Layout = Layout(), services: Iterable[str] = SERVICES,
         grace: float | None = None) -> dict[str, int | None]:
    """Stop in reverse dependency order, so nothing loses a peer while it drains."""
    return {instance: stop(instance, layout, grace)
            for service in reversed(tuple(services)) for instance in instances(service, layout)}


def kill(service: str, layout: Layout = Layout()) -> int | None:
    """SIGKILL, no drain (crash drills). Returns the pid killed, or None."""
    _check_service(service)
    pid = running_pid(service, layout)
    if pid is None:
        return None
    os.kill(pid, signal.SIGKILL)
    _note(service, layout, f"meshctl: pid {pid} killed (SIGKILL, no drain)", "WARNING")
    _wait_gone(pid, service, 5.0)
    _children.pop(pid, None)
    layout.pid_file(service).unlink(missing_ok=True)
    log.info("%-13s killed           pid %d", service, pid)
    return pid


def restart(service: str, env: Mapping[str, str] | None = None, layout: Layout = Layout(),
            timeout: float = HEALTH_TIMEOUT_S) -> int:
    full = service_env(env, replicas=len(instances(base_of(service), layout)))
    stop(service, layout, stop_grace(full))
    return ensure(service, full, layout, timeout)


def status(env: Mapping[str, str] | None = None, layout: Layout = Layout()) -> list[ServiceStatus]:
    source = env if env is not None else os.environ
    result = []
    for service in SERVICES:
        for instance in instances(service, layout):
            address = addr_of(instance, source)
            result.append(ServiceStatus(instance, running_pid(instance, layout), address,
                                        health(address, source)))
    return result


def grpcurl_hints(env: Mapping[str, str] | None = None) -> str:
    source = env if env is not None else os.environ
    grpcurl = ".venv/bin/grpcurl " + grpcurl_tls(source, "operator-alice")
    edge = ".venv/bin/grpcurl " + grpcurl_tls(source, "app-edge")
    a = {s: addr_of(s, source) for s in SERVICES}
    admin = {s: admin_addr_of(s, source) for s in SERVICES}
    calls = [
        (edge, a["gateway_mock"], "mesh.gateway.v1.GatewayService/ListMethods", '{"uid": 1}'),
        (edge, a["account_svc"], "mesh.account.v1.AccountService/GetBalance", '{"uid": 1}'),
        (grpcurl, admin["withdraw_svc"], "mesh.withdraw.v1.WithdrawAdminService/GetGate", '{"uid": 1}'),
        (grpcurl, admin["payout_svc"], "mesh.payout.v1.PayoutAdminService/GetChannelStats", "{}"),
        (grpcurl, a["recon_svc"], "mesh.recon.v1.ReconService/GetReconStatus", "{}"),
    ]
    lines = [
        "Try the mesh with grpcurl (server reflection is on; admin services on port + 100):",
        *(f"  {grpcurl} {a[s]} list" for s in SERVICES),
        f"  {grpcurl} {a['withdraw_svc']} list mesh.withdraw.v1.WithdrawService",
        f"  {grpcurl} {a['withdraw_svc']} describe mesh.withdraw.v1.WithdrawService",
        f"  {grpcurl} {a['withdraw_svc']} describe mesh.withdraw.v1.ConfirmWithdrawRequest",
        *(f"  {tool} -d {shlex.quote(body)} {address} {method}" for tool, address, method, body in calls),
        "  # user-facing RPCs (page, confirm, orders, balance, bill) take a session token:",
        f"  {edge} -H \"authorization: Bearer $(MESH_ENV=dev .venv/bin/python -m edge issue --uid 1)\" "
        f"-d '{{}}' {a['account_svc']} mesh.account.v1.AccountService/GetBalance",
        f"  {grpcurl} {a['account_svc']} grpc.health.v1.Health/Check",
    ]
    return "\n".join(lines)


def grpcurl_tls(env: Mapping[str, str], identity: str) -> str:
    """grpcurl's flags to call as `identity` (or -plaintext under MESH_INSECURE=1)."""
    if insecure(env):
        return "-plaintext"
    certs = CertDir.from_env(env)
    return f"-cacert {certs.ca} -cert {certs.cert(identity)} -key {certs.key(identity)}"


USAGE = "usage: mesh.py up [--replicas N] | down | status | restart <svc>[-k] | kill <svc>[-k]"


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="mesh: %(message)s", stream=sys.stdout)
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command in ("up", "restart") and os.environ.setdefault("MESH_ENV", "dev") == "dev":
        # The local mesh runs under development rules (meshkit.secrets): said once, here.
        print("mesh: MESH_ENV=dev: development rules (the built-in reward-token and session-token "
              "keys when REWARD_TOKEN_KEYS / SESSION_TOKEN_KEYS are unset); set MESH_ENV to anything "
              "else to refuse them")
    try:
        if command == "up" and (not args or (len(args) == 2 and args[0] == "--replicas")):
            replicas = int(args[1]) if args and args[1].isdigit() else 1
            if args and not args[1].isdigit():
                print(USAGE, file=sys.stderr)
                return 2
            up(replicas=replicas)
            print(grpcurl_hints(service_env(replicas=replicas)))
        elif command == "down" and not args:
            down()
        elif command == "status" and not args:
            rows = status()
            print(f"{'service':<15} {'pid':>7}  {'address':<21} health")
            for row in rows:
                print(f"{row.service:<15} {row.pid or '-':>7}  {row.address:<21} {row.health}")
            return 0 if all(r.health == SERVING for r in rows) else 1
        elif command == "restart" and len(args) == 1:
            restart(args[0])
        elif command == "kill" and len(args) == 1:
            if kill(args[0]) is None:
                print(f"mesh: {args[0]} is not running")
        else:
            print(USAGE, file=sys.stderr)
            return 2
    except MeshError as exc:
        print(f"mesh: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
