"""Replicas of a real service in-process, each counting the calls it serves.

`Counted` wraps a service's App: the servicers are the service's own, registered as
`build()` made them; each unary method is wrapped on its way to the server so that the
test sees which replica ran a call (and, when told to, fails calls with a given code
before the handler runs, standing in for a replica that breaks)."""

from __future__ import annotations

import asyncio
import importlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from meshkit.server import App, RunningServer
from tests import harness


@dataclass
class Faults:
    """What this replica does to the next calls of a method, before its handler runs."""

    code: grpc.StatusCode | None = None
    times: int = 0
    # Seconds to hold a call before answering (past the caller's deadline, for a test).
    stall_s: float = 0.0


@dataclass
class Counted:
    """An App whose registered unary handlers count their calls per method."""

    app: App
    calls: Counter[str] = field(default_factory=Counter)
    faults: dict[str, Faults] = field(default_factory=dict)

    async def start(self) -> None:
        await self.app.start()

    async def healthy(self) -> bool:
        return await self.app.healthy()

    async def drain(self) -> None:
        await self.app.drain()

    async def close(self) -> None:
        await self.app.close()

    def register(self, server: grpc.aio.Server) -> list[str]:
        return self.app.register(_CountingServer(server, self))  # type: ignore[arg-type]

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.calls[method] += 1
            fault = self.faults.get(method)
            if fault is not None and fault.stall_s:
                await asyncio.sleep(fault.stall_s)
            if fault is not None and fault.code is not None and fault.times > 0:
                fault.times -= 1
                await context.abort(fault.code, f"replica fault {fault.code.name}")
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            counted, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


class _CountingServer:
    """Stands in for the server in App.register: each handler wrapped, then passed on."""

    def __init__(self, server: grpc.aio.Server, counted: Counted) -> None:
        self.server, self.counted = server, counted

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        wrapped = {name: self.counted.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        # The generated code adds each service both ways: the generic copy is wrapped too,
        # whichever of the two the server looks up first.
        rebuilt = []
        for handler in handlers:
            service = handler.service_name()
            methods = getattr(handler, "_method_handlers", None)
            if methods is None:
                rebuilt.append(handler)
                continue
            rebuilt.append(grpc.method_handlers_generic_handler(service, {
                path.rsplit("/", 1)[-1]: self.counted.wrap(path, h) for path, h in methods.items()}))
        self.server.add_generic_rpc_handlers(rebuilt)


@dataclass
class Replica:
    running: RunningServer
    counted: Counted

    @property
    def address(self) -> str:
        return self.running.address

    def served(self, method: str) -> int:
        return self.counted.calls[method]


async def start_replica(name: str, env: dict[str, str]) -> Replica:
    """One replica of service `name` in-process on a free port, built as `python -m` builds it."""
    module = importlib.import_module(f"{name}.server")
    with harness.patched_env(env):
        app, settings = module.build()
    counted = Counted(app)
    running = await harness.start_built(counted, settings)
    return Replica(running, counted)
