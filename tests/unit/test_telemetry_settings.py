"""Where traces go, how much is logged and where metrics are served, as the environment
says; and every setting that cannot be honoured refused with the variable's name."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from meshkit.logs import JsonFormatter, log_level_from_env
from meshkit.metrics import metrics_host
from meshkit.telemetry import (
    exporter_names,
    exporters_from_env,
    otlp_target,
    provider_from_env,
)
from tools.meshctl import log_line

OTLP = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


def refusal(excinfo: pytest.ExceptionInfo[SystemExit]) -> str:
    return str(excinfo.value.code)


def test_no_setting_means_no_exporter_and_a_sampler_that_records_nothing() -> None:
    assert exporter_names({}) == ([], "OTEL_TRACES_EXPORTER")
    provider, recording = provider_from_env("svc", {})
    assert not recording and provider.sampler is ALWAYS_OFF
    provider, recording = provider_from_env("svc", {"OTEL_TRACES_EXPORTER": "none"})
    assert not recording and provider.sampler is ALWAYS_OFF


def test_an_endpoint_alone_means_otlp() -> None:
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == (
        ["otlp"], "OTEL_EXPORTER_OTLP_ENDPOINT")
    assert exporter_names({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}) == (
        ["otlp"], "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) \
        == ([], "OTEL_TRACES_EXPORTER")


def test_exporters_are_built_as_listed_and_record() -> None:
    env = {"OTEL_TRACES_EXPORTER": "OTLP, console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    exporters = exporters_from_env(env)
    assert [type(e) for e in exporters] == [OTLPSpanExporter, ConsoleSpanExporter]
    provider, recording = provider_from_env("svc", env)
    try:
        assert recording and provider.sampler is not ALWAYS_OFF
        assert provider.resource.attributes["service.name"] == "svc"
    finally:
        provider.shutdown()


def test_http_is_plaintext_https_is_tls_and_the_traces_endpoint_wins() -> None:
    plain = otlp_target({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert (plain.endpoint, plain.insecure, plain.source) == (
        "http://collector:4317", True, "OTEL_EXPORTER_OTLP_ENDPOINT")
    tls = otlp_target({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                       "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example:443"})
    assert (tls.endpoint, tls.insecure, tls.source) == (
        "https://traces.example:443", False, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    default = otlp_target({})
    assert (default.endpoint, default.insecure) == ("http://localhost:4317", True)


@pytest.mark.parametrize(("env", "variable"), [
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "none,console"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
     "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector"},
     "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:port"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
])
def test_a_setting_that_cannot_be_honoured_is_refused_by_name(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SystemExit) as refused:
        provider_from_env("svc", env)
    assert variable in refusal(refused)


def test_an_exporter_that_cannot_be_loaded_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, OTLP, None)  # what a missing package looks like to import
    with pytest.raises(SystemExit) as refused:
        exporters_from_env({"OTEL_TRACES_EXPORTER": "otlp"})
    assert "OTEL_TRACES_EXPORTER" in refusal(refused) and "cannot be loaded" in refusal(refused)
    with pytest.raises(SystemExit) as implied:
        exporters_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in refusal(implied)


def test_log_level() -> None:
    assert log_level_from_env({}) == "INFO"
    assert log_level_from_env({"LOG_LEVEL": "warning"}) == "WARNING"
    assert log_level_from_env({"LOG_LEVEL": " DEBUG "}) == "DEBUG"
    for bad in ("LOUD", "CRITICAL", "10", "WARN"):
        with pytest.raises(SystemExit) as refused:
            log_level_from_env({"LOG_LEVEL": bad})
        assert "LOG_LEVEL" in refusal(refused) and repr(bad) in refusal(refused)


def test_metrics_host_per_service_then_mesh_wide_then_loopback() -> None:
    assert metrics_host("payout_svc", {}) == "127.0.0.1"
    assert metrics_host("payout_svc", {"METRICS_HOST": "0.0.0.0"}) == "0.0.0.0"
    assert metrics_host("payout_svc", {"METRICS_HOST": "0.0.0.0", "PAYOUT_SVC_METRICS_HOST": "10.0.0.5"}) \
        == "10.0.0.5"
    assert metrics_host("payout_svc", {"ACCOUNT_SVC_METRICS_HOST": "10.0.0.5"}) == "127.0.0.1"


def test_meshctl_lines_have_the_services_json_format() -> None:
    record = logging.LogRecord("meshkit.server", logging.INFO, __file__, 1, "listening", None, None)
    service_line = json.loads(JsonFormatter("payout_svc").format(record))
    raw = log_line("payout_svc", "meshctl: starting payout_svc")
    assert raw.endswith("\n") and raw.count("\n") == 1
    ours = json.loads(raw)
    assert ours.keys() == service_line.keys()
    assert (ours["service"], ours["level"], ours["logger"]) == ("payout_svc", "INFO", "meshctl")
    assert len(ours["ts"]) == len(service_line["ts"]) and ours["ts"].endswith("Z")


def test_warnings_and_a_crash_are_json_lines_too() -> None:
    script = ("from meshkit.logs import setup_logging\n"
              "import threading, warnings\n"
              "setup_logging('svc')\n"
              "warnings.warn('careful')\n"
              "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
              "raise RuntimeError('boom')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # each must parse
    assert [(line["level"], line["logger"]) for line in lines] == [
        ("WARNING", "py.warnings"), ("CRITICAL", "uncaught"), ("CRITICAL", "uncaught")], lines
    assert "careful" in lines[0]["msg"]
    assert "ZeroDivisionError in thread worker" in lines[1]["msg"] and "Traceback" in lines[1]["exc"]
    assert lines[2]["msg"] == "uncaught RuntimeError: boom" and "Traceback" in lines[2]["exc"]
