"""Server bootstrap shared by every service: interceptors, health, reflection, graceful
shutdown on SIGTERM. A service supplies an App; tests start the same App on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, cast

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from meshkit.admission import Admission, Gate
from meshkit.interceptors import server_interceptors
from meshkit.logs import log_level_from_env, setup_logging
from meshkit.metrics import metrics_host, setup_metrics
from meshkit.policy import ADMIN_SERVICES
from meshkit.settings import CommonSettings, ServerLimits, env_int, env_str
from meshkit.telemetry import setup_tracing
from meshkit.transport import bind

log = logging.getLogger(__name__)

HEALTH_PROBE_INTERVAL_S = 2.0


class App(Protocol):
    async def start(self) -> None:
        """Connect stores, migrate, start background work. Runs before the port opens."""

    def register(self, server: grpc.aio.Server) -> list[str]:
        """Add servicers; return their full service names (for health and reflection)."""

    async def healthy(self) -> bool:
        """True while the stores this service needs answer."""

    async def drain(self) -> None:
        """Stop background work: finish what is in flight, acknowledge nothing unfinished."""

    async def close(self) -> None:
        """Release connections."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    app: App
    health: HealthServicer
    service_names: list[str]
    # Admission of the user-facing methods (None when the service sheds nothing).
    gate: Gate | None = None
    # The admin services' own listener (None when the service has no admin service).
    admin: grpc.aio.Server | None = None
    admin_port: int = 0
    _probe: asyncio.Task[None] | None = field(default=None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_address(self) -> str | None:
        return f"127.0.0.1:{self.admin_port}" if self.admin is not None else None

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.app.drain()
        if self.admin is not None:
            await self.admin.stop(grace)
        await self.server.stop(grace)
        await self.app.close()


class _Listeners:
    """Stands in for the server in App.register: each service's handlers go to the main
    server, the admin services' (meshkit.policy.ADMIN_SERVICES) to the admin server."""

    def __init__(self, main: grpc.aio.Server, make_admin: Callable[[], grpc.aio.Server]) -> None:
        self.main, self.make_admin = main, make_admin
        # Made only when an admin service registers: an unstarted server is never left behind.
        self.admin: grpc.aio.Server | None = None

    def _for(self, service: str) -> grpc.aio.Server:
        if service not in ADMIN_SERVICES:
            return self.main
        if self.admin is None:
            self.admin = self.make_admin()
        return self.admin

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        for handler in handlers:
            self._for(handler.service_name()).add_generic_rpc_handlers((handler,))

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self._for(service).add_registered_method_handlers(service, handlers)  # type: ignore[attr-defined]


async def _set_all(health: HealthServicer, names: list[str], serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for name in ["", *names]:
        await health.set(name, status)


async def _probe_loop(app: App, health: HealthServicer, names: list[str]) -> None:
    serving = True
    while True:
        await asyncio.sleep(HEALTH_PROBE_INTERVAL_S)
        try:
            ok = await asyncio.wait_for(app.healthy(), timeout=HEALTH_PROBE_INTERVAL_S)
        except Exception:
            ok = False
        if ok != serving:
            log.warning("health changed to %s", "SERVING" if ok else "NOT_SERVING")
            serving = ok
            await _set_all(health, names, ok)


INSECURE_WARNING = (
    "MESH_INSECURE=1: plaintext without client certificates. Nothing is authenticated: the "
    "caller policy trusts the self-declared x-mesh-caller header. Never on a shared network.")


def _server(service: str, gate: Gate, health: HealthServicer, limits: ServerLimits) -> grpc.aio.Server:
    # No SO_REUSEPORT: a second copy on a taken port must fail, not silently share traffic.
    server = grpc.aio.server(
        interceptors=server_interceptors(service, gate),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limits.max_receive_bytes),
            ("grpc.max_send_message_length", limits.max_send_bytes),
        ],
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    return server


def _reflect(server: grpc.aio.Server, names: list[str]) -> None:
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )


async def start_server(app: App, settings: CommonSettings, *, port: int | None = None,
                       admin_port: int | None = None) -> RunningServer:
    """Start the app's servers. `port` overrides the main port (tests pass 0); the admin
    port is then `admin_port`, else 0 (free) too."""
    if not settings.tls.enabled:
        log.warning(INSECURE_WARNING)
    # Stores and migrations first: servicers are built on live connections.
    await app.start()
    admission = Admission(settings.admission) if settings.admission.enabled and settings.admitted else None
    gate = Gate(admission, settings.admitted)
    # One health servicer for both listeners: the admin port answers what the main one does.
    health = HealthServicer()
    server = _server(settings.service, gate, health, settings.limits)
    listeners = _Listeners(server, lambda: _server(settings.service, gate, health, settings.limits))
    names = app.register(cast(grpc.aio.Server, listeners))
    _reflect(server, [n for n in names if n not in ADMIN_SERVICES])
    bound = bind(server, f"{settings.host}:{settings.port if port is None else port}", settings.tls)
    admin_bound = 0
    admin = listeners.admin
    if admin is not None:
        _reflect(admin, [n for n in names if n in ADMIN_SERVICES])
        wanted = admin_port if admin_port is not None else (0 if port is not None else settings.admin_port)
        admin_bound = bind(admin, f"{settings.host}:{wanted}", settings.tls)
        await admin.start()
    await server.start()
    await _set_all(health, names, serving=await app.healthy())
    running = RunningServer(server, bound, app, health, names, gate, admin, admin_bound)
    running._probe = asyncio.create_task(_probe_loop(app, health, names))
    log.info("%s listening on %s:%d%s", settings.service, settings.host, bound,
             f", admin services on port {admin_bound}" if admin is not None else "")
    return running


async def serve(app: App, settings: CommonSettings) -> None:
    running = await start_server(app, settings)
    tune_gc(env_int("MESH_GC_GEN0", DEFAULT_GC_GEN0))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s shutting down", settings.service)
    await running.stop(settings.grace_seconds)


# Gen-0 collection threshold of a running service (Python's default is 700).
DEFAULT_GC_GEN0 = 50_000


def tune_gc(gen0: int) -> None:
    """What start-up allocated (modules, descriptors, pools) lives as long as the process:
    frozen, the collector stops walking it. A call allocates a few hundred short-lived
    objects, nearly all gone when it ends, so gen-0 collections every 700 allocations cost
    CPU and pause the loop for little (measured in BENCHMARKS.md); 0 keeps Python's defaults."""
    if gen0 <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def main(service: str, build: Callable[[], tuple[App, CommonSettings]]) -> None:
    # JSON logging first, at INFO until LOG_LEVEL is read: a refusal to start below is a
    # JSON line in the service's log like every other.
    setup_logging(service)
    try:
        setup_logging(service, log_level_from_env())
        setup_tracing(service)
        app, settings = build()
        default_metrics_port = settings.port + 1000 if settings.port else 0
        setup_metrics(service, env_int(f"{service.upper()}_METRICS_PORT", default_metrics_port),
                      metrics_host(service, os.environ))
        # uvloop by default: asyncpg and redis spend a good part of each call in the event
        # loop's socket handling, which libuv does in C (MESH_EVENT_LOOP=asyncio opts out).
        loop = env_str("MESH_EVENT_LOOP", "uvloop")
        if loop not in ("uvloop", "asyncio"):
            raise SystemExit(f"MESH_EVENT_LOOP must be uvloop or asyncio, not {loop!r}")
    except SystemExit as refused:
        _exit_logged(refused, f"{service} refuses to start")
    try:
        (uvloop.run if loop == "uvloop" else asyncio.run)(serve(app, settings))
    except SystemExit as stopped:
        _exit_logged(stopped, f"{service} stopped")


def _exit_logged(error: SystemExit, what: str) -> NoReturn:
    """A SystemExit carrying a message (a setting refused) becomes a CRITICAL JSON line and
    exit status 1: Python would print the bare message into the JSON log file."""
    if not isinstance(error.code, str):
        raise error
    log.critical("%s: %s", what, error.code)
    raise SystemExit(1) from None
