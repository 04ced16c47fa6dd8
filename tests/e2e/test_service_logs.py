"""A service's log file is JSON lines only, whoever writes into it: the service's own
logging, tools/meshctl.py's start and kill notes, the console span exporter, and a
refusal to start. A setting the service cannot honour stops it with a line naming the
variable, before it serves anything. And a trace collector that is away does not keep a
service from exiting within its grace period."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from meshkit.dialer import Dialer
from tests.waiting import poll_blocking
from tools import meshctl as mesh

pytestmark = pytest.mark.e2e

SERVICE = "gateway_mock"
# What meshkit.logs.JsonFormatter writes on every line.
LINE_KEYS = {"ts", "level", "service", "logger", "msg"}
EXIT_TIMEOUT_S = 60.0


def _env(mesh_env: dict[str, str], **extra: str) -> dict[str, str]:
    port, admin = mesh.free_ports(2)
    return mesh.service_env({
        **mesh_env, "GATEWAY_MOCK_PORT": str(port), "GATEWAY_MOCK_ADDR": f"127.0.0.1:{port}",
        "GATEWAY_MOCK_ADMIN_PORT": str(admin),
        "GATEWAY_MOCK_METRICS_PORT": "0", "GATEWAY_DB_POOL_SIZE": "2", "MESH_SHUTDOWN_GRACE_S": "2",
        # Its own schema: the session's e2e mesh has a gateway_mock on the default one.
        "GATEWAY_MOCK_DB_SCHEMA": "gateway_logs", **extra,
    })


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            value = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} of {path.name} is not JSON: {line!r}\n--- the file ---\n{text}")
        assert isinstance(value, dict), f"line {number} of {path.name} is not a JSON object: {line!r}"
        parsed.append(value)
    return parsed


def _list_methods(address: str, env: dict[str, str]) -> None:
    with Dialer.from_env(env).sync_channel(address, "app-edge") as channel:
        gateway_pb2_grpc.GatewayServiceStub(channel).ListMethods(gateway_pb2.ListMethodsRequest(uid=7),
                                                                 timeout=10)


async def test_every_line_of_a_service_log_is_json_over_a_meshctl_cycle(
        mesh_env: dict[str, str], tmp_path: Path) -> None:
    env = _env(mesh_env, LOG_LEVEL="debug", OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="100")
    layout = mesh.Layout(tmp_path)
    try:
        await asyncio.to_thread(mesh.up, env, layout, [SERVICE], 30.0)
        await asyncio.to_thread(_list_methods, mesh.addr_of(SERVICE, env), env)
        await asyncio.to_thread(mesh.restart, SERVICE, env, layout, 30.0)
        await asyncio.to_thread(mesh.kill, SERVICE, layout)
        await asyncio.to_thread(mesh.up, env, layout, [SERVICE], 30.0)
    finally:
        codes = await asyncio.to_thread(mesh.down, layout, [SERVICE], 5.0)
    assert codes == {SERVICE: 0}

    lines = _lines(layout.log_file(SERVICE))
    logged = [line for line in lines if LINE_KEYS <= line.keys()]
    spans = [line for line in lines if "context" in line and "name" in line]
    assert len(logged) + len(spans) == len(lines), \
        f"lines neither log records nor spans: {[x for x in lines if x not in logged and x not in spans]}"
    meshctl = [line["msg"] for line in logged if line["logger"] == "meshctl"]
    assert meshctl.count(f"meshctl: starting {SERVICE}") == 3, meshctl
    assert any("killed (SIGKILL" in msg for msg in meshctl), meshctl
    assert all(line["service"] == SERVICE for line in logged)
    assert sum("listening on" in line["msg"] for line in logged) == 3
    # LOG_LEVEL=debug (any case) is honoured: DEBUG records reach the file.
    assert any(line["level"] == "DEBUG" for line in logged), sorted({line["level"] for line in logged})
    # The console exporter writes each span as one JSON line.
    assert any(span["name"] == "/mesh.gateway.v1.GatewayService/ListMethods" for span in spans), \
        [span["name"] for span in spans]


@pytest.mark.parametrize(("settings", "variable"), [
    ({"OTEL_TRACES_EXPORTER": "bogus"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
     "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://127.0.0.1:4317"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
])
async def test_a_setting_that_cannot_be_honoured_stops_the_service(
        mesh_env: dict[str, str], tmp_path: Path, settings: dict[str, str], variable: str) -> None:
    env = _env(mesh_env, **settings)
    layout = mesh.Layout(tmp_path)
    proc = mesh.start(SERVICE, env, layout)
    try:
        code = await asyncio.to_thread(proc.wait, EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        mesh.stop(SERVICE, layout, grace=1.0)
    assert code == 1
    lines = _lines(layout.log_file(SERVICE))
    refusals = [line for line in lines if line.get("level") == "CRITICAL"]
    assert len(refusals) == 1, lines
    assert "refuses to start" in refusals[0]["msg"] and variable in refusals[0]["msg"], refusals[0]
    assert not any("listening on" in str(line.get("msg")) for line in lines)


async def test_a_collector_that_is_away_does_not_hold_up_shutdown(
        mesh_env: dict[str, str], tmp_path: Path) -> None:
    # Nothing listens there: every export fails and is retried, the last one at exit.
    nobody = mesh.free_ports(1)[0]
    env = _env(mesh_env, OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{nobody}",
               OTEL_BSP_SCHEDULE_DELAY="100")
    layout = mesh.Layout(tmp_path)
    try:
        await asyncio.to_thread(mesh.up, env, layout, [SERVICE], 30.0)
        await asyncio.to_thread(_list_methods, mesh.addr_of(SERVICE, env), env)
        # Stop it while an export is in its retries (it logs each failed try).
        await asyncio.to_thread(_wait_export_failed, layout, 20.0)
    finally:
        # SIGTERM, then SIGKILL (-9) if it is still there after 8 s: the service drains in
        # its 2 s grace; only the exporter's retries could keep it longer.
        codes = await asyncio.to_thread(mesh.down, layout, [SERVICE], 8.0)
    assert codes == {SERVICE: 0}, mesh.log_tail(SERVICE, layout)
    assert _export_failed(layout), "no export was attempted, so this test shows nothing"


def _wait_export_failed(layout: mesh.Layout, timeout: float) -> None:
    poll_blocking(lambda: _export_failed(layout), timeout=timeout)


def _export_failed(layout: mesh.Layout) -> bool:
    return any(str(line.get("logger", "")).startswith("opentelemetry.exporter")
               for line in _lines(layout.log_file(SERVICE)))
