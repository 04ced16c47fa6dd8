"""A PostgreSQL outage for the drill: the mesh's database connections are routed through a
fault proxy of the drill's own, which can cut them all and refuse new ones for a while.

Works on any PostgreSQL the mesh uses (the machine's, or the private one `make up`
started), because nothing is stopped: the services are restarted once with DATABASE_URL
pointing at the proxy, and restarted again with the real address when the drill ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from meshkit.settings import DEFAULT_DATABASE_URL
from tools import meshctl as mesh
from tools.faultproxy import FaultProxy

log = logging.getLogger(__name__)


def _with_address(url: str, host: str, port: int) -> str:
    p = urlsplit(url)
    userinfo = p.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


class PostgresDetour:
    def __init__(self, env: dict[str, str], layout: mesh.Layout, note: Callable[[str, str], None],
                 restart_timeout_s: float, services: tuple[str, ...] = mesh.SERVICES) -> None:
        self.env = env
        self.layout = layout
        self.note = note
        self.restart_timeout_s = restart_timeout_s
        self.services = services
        self.real_url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        self.proxy: FaultProxy | None = None

    @property
    def installed(self) -> bool:
        return self.proxy is not None

    async def install(self) -> None:
        """Start the proxy and restart every service through it; `env` (the drill's, used for
        every later restart) then names the proxy."""
        target = urlsplit(self.real_url)
        self.proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 5432)
        await self.proxy.start()
        self.env["DATABASE_URL"] = _with_address(self.real_url, "127.0.0.1", self.proxy.port)
        await self._restart_all(self.env)
        self.note(f"PostgreSQL routed through a fault proxy on port {self.proxy.port}: "
                  f"{', '.join(self.services)} restarted through it", "")

    async def outage(self, seconds: float) -> None:
        assert self.proxy is not None, "install() first"
        await self.proxy.cut()
        self.note(f"PostgreSQL cut: live connections dropped, new ones refused for {seconds:g}s", "pg down")
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.proxy.heal()
        self.note("PostgreSQL reachable again", "pg up")

    async def remove(self) -> None:
        """Back to the real address (services restarted), proxy stopped. Safe to call twice."""
        if self.proxy is None:
            return
        await self.proxy.heal()
        self.env["DATABASE_URL"] = self.real_url
        try:
            await self._restart_all(self.env)
            self.note("services restarted on the real PostgreSQL address; fault proxy stopped", "")
        finally:
            await self.proxy.stop()
            self.proxy = None

    async def _restart_all(self, env: Mapping[str, str]) -> None:
        for service in self.services:
            await asyncio.to_thread(mesh.restart, service, dict(env), self.layout, self.restart_timeout_s)
