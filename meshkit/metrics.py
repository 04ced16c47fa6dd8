"""OpenTelemetry metrics with a Prometheus scrape endpoint per service.

`<SVC>_METRICS_PORT` picks the port (default: the gRPC port + 1000; 0 turns it off);
`<SVC>_METRICS_HOST`, else `METRICS_HOST`, the address it binds (default 127.0.0.1, so
nothing outside the host can scrape unless told: `0.0.0.0` or `::` for every interface).
Several services started in one test process share one meter provider and one endpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

log = logging.getLogger(__name__)

DEFAULT_METRICS_HOST = "127.0.0.1"

_started_port: int | None = None


def metrics_host(service: str, environ: Mapping[str, str]) -> str:
    for var in (f"{service.upper()}_METRICS_HOST", "METRICS_HOST"):
        value = environ.get(var, "").strip()
        if value:
            return value
    return DEFAULT_METRICS_HOST


def serve_metrics(host: str, port: int) -> WSGIServer:
    """The /metrics endpoint on host:port (port 0: any free one); raises OSError."""
    server, _thread = start_http_server(port, addr=host)
    return server


def setup_metrics(service: str, port: int, host: str = DEFAULT_METRICS_HOST) -> int | None:
    """Install the Prometheus reader once per process and serve /metrics on host:port."""
    global _started_port
    if _started_port is not None or port <= 0:
        return _started_port
    reader = PrometheusMetricReader()
    # The Prometheus page carries no exemplars, yet the SDK's default filter (trace based)
    # keeps a reservoir per counter and histogram, costing every RPC's metrics a few
    # microseconds for nothing. OTEL_METRICS_EXEMPLAR_FILTER, when set, is the SDK's to read.
    exemplars = None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
    metrics.set_meter_provider(
        MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader],
                      exemplar_filter=exemplars)
    )
    try:
        server = serve_metrics(host, port)
    except OSError as exc:
        log.warning("metrics endpoint on %s port %d not started: %s", host, port, exc)
        return None
    _started_port = server.server_port
    log.info("metrics on http://%s:%d/metrics", host, _started_port)
    return _started_port
