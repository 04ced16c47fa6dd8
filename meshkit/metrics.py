"""OpenTelemetry metrics with a Prometheus scrape endpoint per service.

`<SVC>_METRICS_PORT` picks the port (default: the gRPC port + 1000; 0 turns it off).
Several services started in one test process share one meter provider and one endpoint.
"""

from __future__ import annotations

import logging

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

log = logging.getLogger(__name__)

_started_port: int | None = None


def setup_metrics(service: str, port: int) -> int | None:
    """Install the Prometheus reader once per process and serve /metrics on `port`."""
    global _started_port
    if _started_port is not None or port <= 0:
        return _started_port
    reader = PrometheusMetricReader()
    metrics.set_meter_provider(
        MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
    )
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        log.warning("metrics endpoint on port %d not started: %s", port, exc)
        return None
    _started_port = server.server_port
    log.info("metrics on http://127.0.0.1:%d/metrics", _started_port)
    return _started_port
