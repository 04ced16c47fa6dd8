"""OpenTelemetry set-up and context propagation across gRPC metadata and stream entries."""

from __future__ import annotations

import logging
import os

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"


def setup_tracing(service: str) -> None:
    """Install a tracer provider once per process; the exporter is chosen by OTEL_* variables."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    exporter = _exporter_from_env()
    resource = Resource.create({"service.name": service})
    if exporter is None and not os.environ.get("OTEL_TRACES_SAMPLER"):
        # Nothing would receive the spans: keep ids (logs and peers still see a trace id)
        # but record nothing, which costs a fraction of a recorded span on the hot path.
        trace.set_tracer_provider(TracerProvider(resource=resource, sampler=ALWAYS_OFF))
        return
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument_clients()


_instrumented = False


def instrument_clients() -> None:
    """asyncpg queries and Redis commands become child spans of whatever span is current."""
    global _instrumented
    if _instrumented:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().instrument()
    RedisInstrumentor().instrument()
    _instrumented = True


def _exporter_from_env() -> SpanExporter | None:
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed")
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "") == "console":
        return ConsoleSpanExporter()
    return None


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def meter(name: str) -> metrics.Meter:
    return metrics.get_meter(name)


def inject_into(carrier: dict[str, str]) -> dict[str, str]:
    """Write the current trace context (W3C traceparent) into a dict of strings."""
    propagate.inject(carrier)
    return carrier


def extract_from(carrier: dict[str, str]) -> Context:
    return propagate.extract(carrier)
