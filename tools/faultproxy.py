"""A TCP fault proxy for tests and the drill, in the spirit of Toxiproxy: point a service's
DATABASE_URL (or a peer address) at `proxy.port` and cut the link at will.

    proxy = FaultProxy("127.0.0.1", 5432)
    await proxy.start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
    await proxy.cut()    # every live connection closed, new ones accepted then closed
    await proxy.heal()   # accept and forward again
    await proxy.stop()

A cut closes connections rather than stalling them: what a client sees is a lost or
refused connection (as when the server restarts), not a hang. No dependencies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client, self.upstream = client, upstream
        self.pumps: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        # abort, not close: bytes still buffered are dropped, as on a broken network.
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.listen_host, self.listen_port = listen_host, listen_port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._cut = False
        # Bumped by every cut: a connection whose upstream was still being opened when the
        # cut came must not survive it.
        self._generation = 0
        self.accepted = 0
        self.refused = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FaultProxy.start() has not run")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def live(self) -> int:
        """Connections being forwarded now."""
        return len(self._links)

    async def start(self) -> None:
        self._cut = False
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port)

    async def cut(self) -> None:
        """Close every live connection in both directions; refuse new ones until heal()."""
        self._cut = True
        self._generation += 1
        await self._close_links()
        log.info("fault proxy :%d -> %s:%d cut", self.port, self.target_host, self.target_port)

    async def heal(self) -> None:
        self._cut = False
        log.info("fault proxy :%d -> %s:%d healed", self.port, self.target_host, self.target_port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._cut = True
        self._generation += 1
        await self._close_links()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _close_links(self) -> None:
        links, self._links = list(self._links), set()
        for link in links:
            link.abort()
        pumps = [task for link in links for task in link.pumps]
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            writer.transport.abort()
            return
        generation = self._generation
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            # The target itself is down: the client sees its connection closed, as it would.
            self.refused += 1
            writer.transport.abort()
            return
        if self._cut or generation != self._generation:
            self.refused += 1
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.pumps = [asyncio.create_task(self._pump(reader, up_writer, link)),
                      asyncio.create_task(self._pump(up_reader, writer, link))]
        # The handler lives as long as the link, so the server holds its connection.
        await asyncio.gather(*link.pumps, return_exceptions=True)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await source.read(CHUNK):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # Either side closing ends the link: neither PostgreSQL nor gRPC half-closes.
            if link in self._links:
                self._links.discard(link)
                link.abort()
