"""Where no span is recorded, meshkit's own interceptors stand in for OpenTelemetry's: the
client injects the current trace context, the server makes it current for unary and
streaming handlers (same trace id, a span id of its own), and a call with no context gets
fresh ids, so log lines and peers still carry a trace id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshkit.interceptors import CallerInterceptor, TraceContextInterceptor, TraceStreamInterceptor

SERVICE = "mesh.test.v1.Echo"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331


def _identity(data: bytes) -> bytes:
    return data


class Seen:
    def __init__(self) -> None:
        self.contexts: list[SpanContext] = []

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.contexts.append(trace.get_current_span().get_span_context())
        return request

    async def stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self.contexts.append(trace.get_current_span().get_span_context())
        yield request
        yield request


async def _serve(seen: Seen) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[TraceContextInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(seen.unary, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(seen.stream, _identity, _identity),
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_the_callers_trace_id_reaches_unary_and_streaming_handlers() -> None:
    seen = Seen()
    server, port = await _serve(seen)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                        interceptors=[CallerInterceptor("tests", inject_trace=True),
                                                      TraceStreamInterceptor()])
    try:
        unary = channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)
        stream = channel.unary_stream(f"/{SERVICE}/Stream", _identity, _identity)
        caller = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(caller)))
        try:
            assert await unary(b"x", timeout=5) == b"x"
            assert [r async for r in stream(b"y", timeout=5)] == [b"y", b"y"]
        finally:
            otel_context.detach(token)
        assert await unary(b"z", timeout=5) == b"z"  # no context of the caller's
    finally:
        await channel.close()
        await server.stop(0)
    first, streamed, alone = seen.contexts
    for ctx in (first, streamed):
        assert ctx.is_valid and ctx.trace_id == TRACE_ID and ctx.span_id != SPAN_ID
    assert first.span_id != streamed.span_id
    assert alone.is_valid and alone.trace_id not in (TRACE_ID, first.trace_id)


def test_the_light_interceptors_only_where_nothing_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshkit import interceptors
    from meshkit.telemetry import provider_from_env

    off, recording = provider_from_env("svc", {})
    assert not recording
    monkeypatch.setattr(interceptors.trace, "get_tracer_provider", lambda: off)
    assert any(isinstance(i, TraceContextInterceptor) for i in interceptors.server_interceptors("svc"))
    assert [type(i) for i in interceptors.client_interceptors("svc")] == [CallerInterceptor,
                                                                          TraceStreamInterceptor]
    on, recording = provider_from_env("svc", {"OTEL_TRACES_SAMPLER": "always_on"})
    assert recording
    monkeypatch.setattr(interceptors.trace, "get_tracer_provider", lambda: on)
    assert not any(isinstance(i, TraceContextInterceptor) for i in interceptors.server_interceptors("svc"))
    assert len(interceptors.client_interceptors("svc")) > 2
