"""tools.faultproxy.FaultProxy against a tiny echo server: it forwards both ways, a cut
closes live connections and refuses new ones (accept, then close), heal forwards again.
Loopback sockets only (no PostgreSQL or Redis), hence here rather than in tests/unit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tools.faultproxy import FaultProxy

WAIT_S = 5.0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo_port) as p:
        yield p


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), WAIT_S)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the connection is closed from the other side (EOF or reset)."""
    try:
        return await asyncio.wait_for(reader.read(65536), WAIT_S) == b""
    except ConnectionError:
        return True


async def test_forwards_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1000  # more than one read's worth
    assert await roundtrip(proxy.port, payload) == payload
    assert proxy.accepted == 1


async def test_cut_closes_live_connections_and_refuses_new_ones_until_heal(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), WAIT_S) == b"ping"
    assert proxy.live == 1

    await proxy.cut()
    assert proxy.is_cut and proxy.live == 0
    assert await closed_by_peer(reader)
    writer.close()

    # New connections are accepted, then closed at once: nothing reaches the target.
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer2.write(b"lost")
    assert await closed_by_peer(reader2)
    writer2.close()
    assert proxy.refused == 1

    await proxy.heal()
    assert await roundtrip(proxy.port, b"back") == b"back"


async def test_a_target_that_is_down_closes_the_client(echo_port: int) -> None:
    async with FaultProxy("127.0.0.1", 1) as p:  # nothing listens on port 1
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        assert await closed_by_peer(reader)
        writer.close()
        assert p.refused == 1


async def test_stop_closes_everything_and_the_port(echo_port: int) -> None:
    p = FaultProxy("127.0.0.1", echo_port)
    await p.start()
    port = p.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), WAIT_S) == b"x"
    await p.stop()
    assert await closed_by_peer(reader)
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
