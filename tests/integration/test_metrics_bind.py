"""The metrics endpoint listens on the address it is given, and only there."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from meshkit.metrics import serve_metrics


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return int(reply.status), reply.read().decode()


async def test_metrics_bind_where_told_and_nowhere_else() -> None:
    # 127.0.0.2 is loopback on Linux too, so the test can tell a bind to it from 127.0.0.1's.
    server = await asyncio.to_thread(serve_metrics, "127.0.0.2", 0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.2" and port > 0
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.2:{port}/metrics")
        assert status == 200 and "# HELP" in body
        with pytest.raises(urllib.error.URLError) as refused:
            await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert isinstance(refused.value.reason, ConnectionRefusedError), refused.value
    finally:
        server.shutdown()
        server.server_close()
