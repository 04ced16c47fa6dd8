"""OpenTelemetry set-up and context propagation across gRPC metadata and stream entries.

Where spans go follows the standard variables: `OTEL_TRACES_EXPORTER` (`otlp`, `console`,
`none`, or a comma list; unset means `otlp` when an OTLP endpoint is set, else nothing),
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://` is a
plaintext connection, `https://` TLS; default `http://localhost:4317`) and the OTLP protocol,
of which only `grpc` is installed. A setting that cannot be honoured stops the process with
a message naming the variable: a service that runs without the traces it was asked to send
is only found out when someone needs them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"

EXPORTER_VAR = "OTEL_TRACES_EXPORTER"
ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
PROTOCOL_VAR = "OTEL_EXPORTER_OTLP_PROTOCOL"
TRACES_PROTOCOL_VAR = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
DEFAULT_OTLP_ENDPOINT = "http://localhost:4317"
EXPORTERS = ("otlp", "console", "none")
# At exit the SDK would wait up to 30 s per processor for a collector that does not answer
# (each export retries for OTEL_EXPORTER_OTLP_TIMEOUT, 10 s): past the shutdown grace, so
# meshctl would SIGKILL a service that drained fine. Flush for this long, then drop.
EXIT_FLUSH_MS = 2000


def _refuse(message: str) -> SystemExit:
    return SystemExit(f"tracing: {message}")


def exporter_names(environ: Mapping[str, str]) -> tuple[list[str], str]:
    """The exporters asked for, and the variable that asked (for messages)."""
    raw = environ.get(EXPORTER_VAR, "").strip()
    if not raw:
        for var in (TRACES_ENDPOINT_VAR, ENDPOINT_VAR):
            if environ.get(var, "").strip():
                return ["otlp"], var
        return [], EXPORTER_VAR
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise _refuse(f"{EXPORTER_VAR}={raw!r}: unknown exporter {unknown[0]!r}; "
                      f"one or more of {', '.join(EXPORTERS)}")
    if "none" in names and len(names) > 1:
        raise _refuse(f"{EXPORTER_VAR}={raw!r}: 'none' cannot be combined with other exporters")
    return [name for name in names if name != "none"], EXPORTER_VAR


@dataclass(frozen=True)
class OtlpTarget:
    """Where the OTLP exporter sends spans, and which variable said so."""

    endpoint: str
    insecure: bool
    source: str


def otlp_target(environ: Mapping[str, str]) -> OtlpTarget:
    for var in (TRACES_PROTOCOL_VAR, PROTOCOL_VAR):
        protocol = environ.get(var, "").strip()
        if protocol:
            if protocol != "grpc":
                raise _refuse(f"{var}={protocol!r}: only 'grpc' is installed "
                              "(opentelemetry-exporter-otlp-proto-grpc)")
            break
    source = TRACES_ENDPOINT_VAR if environ.get(TRACES_ENDPOINT_VAR, "").strip() else ENDPOINT_VAR
    endpoint = environ.get(source, "").strip() or DEFAULT_OTLP_ENDPOINT
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise _refuse(f"{source}={endpoint!r}: expected http://host:port (plaintext) "
                      "or https://host:port (TLS)")
    return OtlpTarget(endpoint=endpoint, insecure=parts.scheme == "http", source=source)


def _otlp_exporter(target: OtlpTarget, asked_by: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise _refuse(f"{asked_by} asks for the OTLP exporter, which cannot be loaded ({exc}); "
                      "install opentelemetry-exporter-otlp-proto-grpc") from exc
    exporter: SpanExporter = OTLPSpanExporter(endpoint=target.endpoint, insecure=target.insecure)
    return exporter


class _ExitBoundedProcessor(BatchSpanProcessor):
    def shutdown(self) -> None:
        self._batch_processor.shutdown(timeout_millis=EXIT_FLUSH_MS)


def _one_line(span: ReadableSpan) -> str:
    # One JSON object per line: the console exporter writes into the service's log file.
    return span.to_json(indent=None) + os.linesep


def exporters_from_env(environ: Mapping[str, str]) -> list[SpanExporter]:
    names, asked_by = exporter_names(environ)
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            target = otlp_target(environ)
            exporters.append(_otlp_exporter(target, asked_by))
            log.info("traces exported over OTLP/gRPC to %s (%s)", target.endpoint,
                     "plaintext" if target.insecure else "TLS")
        else:
            exporters.append(ConsoleSpanExporter(formatter=_one_line))
    return exporters


def provider_from_env(service: str, environ: Mapping[str, str]) -> tuple[TracerProvider, bool]:
    """The tracer provider the OTEL_* variables ask for, and whether it records spans.
    Raises SystemExit naming the variable when a setting cannot be honoured."""
    exporters = exporters_from_env(environ)
    resource = Resource.create({"service.name": service})
    if not exporters and not environ.get("OTEL_TRACES_SAMPLER"):
        # Nothing would receive the spans: keep ids (logs and peers still see a trace id)
        # but record nothing, which costs a fraction of a recorded span on the hot path.
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF), False
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(_ExitBoundedProcessor(exporter))
    return provider, True


def setup_tracing(service: str, environ: Mapping[str, str] | None = None) -> None:
    """Install a tracer provider once per process (see provider_from_env)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider, recording = provider_from_env(service, os.environ if environ is None else environ)
    trace.set_tracer_provider(provider)
    if recording:
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
