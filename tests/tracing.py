"""Spans of this test process, recorded on demand.

The test process installs one recording tracer provider before any service starts (a
process gets only one), and keeps spans only while a test captures them, so the suite
does not hoard every span it ever made."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from meshkit.telemetry import instrument_clients


class CapturingProcessor(SpanProcessor):
    def __init__(self) -> None:
        self.capturing = False
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if self.capturing:
            self.spans.append(span)


PROCESSOR = CapturingProcessor()


def install() -> None:
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": "tests"}))
    provider.add_span_processor(PROCESSOR)
    trace.set_tracer_provider(provider)
    instrument_clients()


@contextlib.contextmanager
def captured_spans() -> Iterator[list[ReadableSpan]]:
    PROCESSOR.spans = []
    PROCESSOR.capturing = True
    try:
        yield PROCESSOR.spans
    finally:
        PROCESSOR.capturing = False
