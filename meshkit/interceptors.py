"""The one place where domain errors become gRPC statuses, and where every RPC gets its
admission check, its metrics and, on the client side, the caller name. First of all, the caller policy
(meshkit.policy): a caller not allowed the method is PERMISSION_DENIED before anything else.
A dependency that is away (meshkit.outage) is UNAVAILABLE, not INTERNAL: callers retry
UNAVAILABLE and count INTERNAL as a failure (payout_svc would dead-letter the order).

Spans and trace context in metadata come from opentelemetry-instrumentation-grpc's aio
interceptors, placed between admission and the error mapping (`server_interceptors`):
a refused call costs no span, and the error mapping runs inside the server span, so its
log lines carry the trace id and its abort sets the span's gRPC status."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from meshkit.admission import Admission, Gate, Refused
from meshkit.errors import DomainError, InvalidArgument
from meshkit.identity import CALLER_HEADER, caller_of
from meshkit.outage import OutageLog, outage_of
from meshkit.policy import allowed, open_to_any_caller
from meshkit.status import DEPENDENCY_UNAVAILABLE, OVERLOADED, abort_status, abort_with
from meshkit.telemetry import meter

log = logging.getLogger(__name__)
_meter = meter("meshkit.grpc")
_requests = _meter.create_counter("rpc.server.requests", description="RPCs by method and status")
_latency = _meter.create_histogram("rpc.server.duration", unit="ms", description="RPC latency")
_shed = _meter.create_counter("rpc.server.shed", description="RPCs refused by admission, by reason")

_outages = OutageLog(log)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class _Undecodable:
    """Stands in for a request whose bytes did not parse (a string field with bad UTF-8,
    a corrupt wire format), so the handler can refuse it as INVALID_ARGUMENT: grpc itself
    answers UNKNOWN with the parser's exception text."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    return parse


RETRY_AFTER_HEADER = "retry-after-ms"
# gRPC's own retry policy honours this one (a client with RESOURCE_EXHAUSTED retryable).
PUSHBACK_HEADER = "grpc-retry-pushback-ms"


async def _refuse(method: str, refused: Refused, context: grpc.aio.ServicerContext, domain: str) -> NoReturn:
    hint = str(refused.retry_after_ms)
    context.set_trailing_metadata(((RETRY_AFTER_HEADER, hint), (PUSHBACK_HEADER, hint)))
    attrs = {"rpc.method": method, "rpc.grpc.status": "RESOURCE_EXHAUSTED"}
    _requests.add(1, attrs)
    _shed.add(1, {"rpc.method": method, "reason": refused.reason})
    await abort_status(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded; retry after {hint} ms",
                       reason=OVERLOADED, domain=domain,
                       metadata={"retry_after_ms": hint, "cause": refused.reason})


def _admitted(method: str, behavior: Behavior, admission: Admission, priority: int, domain: str) -> Behavior:
    """Admission before everything else: a refused call costs no span, no parse check and
    no handler, so it is answered at once however busy the replica is."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            ticket = await admission.acquire(priority, context.time_remaining())
        except Refused as refused:
            await _refuse(method, refused, context, domain)
        try:
            return await behavior(request, context)
        finally:
            admission.release(ticket)

    return handle


def _wrap_unary(method: str, behavior: Behavior, domain: str) -> Behavior:
    """Domain errors and outages to statuses, and the RPC metrics. Runs inside the server
    span the OpenTelemetry interceptor opened (the current span); `context` is that
    interceptor's wrapper, whose abort records the status on the span."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        status = "OK"
        span = trace.get_current_span()
        try:
            if isinstance(request, _Undecodable):
                raise InvalidArgument(f"request: not a valid message: {request.error}"[:300],
                                      reason="UNDECODABLE_REQUEST")
            return await behavior(request, context)
        except DomainError as err:
            status = err.code.value
            span.set_attribute("error.reason", err.reason)
            await abort_with(context, err, domain)
        except grpc.aio.AbortError:
            code = context.code()
            status = code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
            raise
        except Exception as exc:
            outage = outage_of(exc)
            if outage is None:
                status = "INTERNAL"
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see server logs")
            else:
                status = "UNAVAILABLE"
                _outages.warn(method, outage)
                span.set_attribute("error.reason", DEPENDENCY_UNAVAILABLE)
                await abort_status(context, grpc.StatusCode.UNAVAILABLE, outage.message,
                                   reason=DEPENDENCY_UNAVAILABLE, domain=domain,
                                   metadata={"dependency": outage.dependency})
        finally:
            attrs = {"rpc.method": method, "rpc.grpc.status": status}
            _requests.add(1, attrs)
            _latency.record((time.perf_counter() - started) * 1000.0, attrs)

    return handle


def _unary_mesh_call(method: str, handler: grpc.RpcMethodHandler | None) -> bool:
    # Health and reflection are streaming (or gRPC's own) and need none of this.
    return handler is not None and handler.unary_unary is not None and not method.startswith("/grpc.")


_denied = _meter.create_counter("rpc.server.denied", description="RPCs refused by the caller policy")


async def _check_caller(method: str, context: grpc.aio.ServicerContext) -> None:
    caller = caller_of(context)
    if not allowed(caller, method):
        _denied.add(1, {"rpc.method": method})
        log.warning("denied: caller %s may not call %s", caller, method)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"caller {caller} may not call {method}")


def _guarded(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler, refusing callers meshkit.policy does not list for the method."""
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _check_caller(method, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        streaming = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _check_caller(method, context)
            async for reply in streaming(request, context):
                yield reply

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    # No mesh RPC streams requests: refuse the shape rather than let it through unchecked.
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method}: streaming requests are not served")

    return grpc.unary_unary_rpc_method_handler(refuse)


class PolicyInterceptor(grpc.aio.ServerInterceptor):
    """Outermost: who may call what (meshkit.policy), decided on the authenticated
    identity before admission, spans or handlers spend anything on the call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or open_to_any_caller(method):
            return handler
        return _guarded(method, handler)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Outermost: the methods the gate lists wait for a slot or are refused at once."""

    def __init__(self, gate: Gate | None, domain: str) -> None:
        self.gate = gate
        self.domain = domain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        gate = self.gate
        if gate is None or gate.admission is None or not _unary_mesh_call(method, handler):
            return handler
        priority = gate.priority_of(method)
        if priority is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _admitted(method, handler.unary_unary, gate.admission, priority, self.domain),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Innermost: error mapping, undecodable requests and metrics for every unary mesh RPC.
    `domain` (the serving service's name) is the ErrorInfo domain of its refusals."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if not _unary_mesh_call(method, handler):
            return handler
        deserialize = handler.request_deserializer
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(method, handler.unary_unary, self.domain),
            request_deserializer=_tolerant(deserialize) if deserialize else None,
            response_serializer=handler.response_serializer,
        )


def _not_grpc_own(details: grpc.HandlerCallDetails) -> bool:
    # Health checks (meshctl polls them every 100 ms) and reflection would be most of the
    # spans. A plain prefix test: the library's own filters cost a Protocol isinstance check
    # and path normalisation on every call.
    return not details.method.startswith("/grpc.")


def records_spans() -> bool:
    """Whether this process's tracer provider records spans. meshkit.telemetry installs one
    sampling ALWAYS_OFF when nothing would receive them; before any is installed (or with
    another provider, as tests install) the answer is yes, the conservative one."""
    provider = trace.get_tracer_provider()
    return not (isinstance(provider, TracerProvider) and provider.sampler is ALWAYS_OFF)


class TraceContextInterceptor(grpc.aio.ServerInterceptor):
    """Stands in for OpenTelemetry's server interceptor where no span is recorded: the
    caller's W3C trace context (or fresh ids) is made current for the handler, so its log
    lines and its calls to peers still carry a trace id, without the library's span
    bookkeeping (its servicer-context wrapper, peer parsing, status recording). On an empty
    handler that bookkeeping was ~60 us of a ~270 us server call (BENCHMARKS.md, views)."""

    def __init__(self) -> None:
        self._ids = RandomIdGenerator()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not _not_grpc_own(handler_call_details):
            return handler
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = otel_context.attach(self._context_of(context))
                try:
                    return await unary(request, context)
                finally:
                    otel_context.detach(token)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                # Not detached: each RPC runs in a task of its own, whose context ends with it
                # (a detach in an async generator's finally may run in another context).
                otel_context.attach(self._context_of(context))
                async for reply in streaming(request, context):
                    yield reply

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler

    def _context_of(self, context: grpc.aio.ServicerContext) -> otel_context.Context:
        """A non-recorded span's context, as the SDK's tracer gives one when its sampler
        drops the span (the caller's trace id and flags, a span id of its own), built
        directly: the sampler, attributes and span kind would all be thrown away."""
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        parent = propagate.extract(carrier)
        caller = trace.get_current_span(parent).get_span_context()
        if caller.is_valid:
            own = SpanContext(caller.trace_id, self._ids.generate_span_id(), is_remote=False,
                              trace_flags=caller.trace_flags, trace_state=caller.trace_state)
        else:
            own = SpanContext(self._ids.generate_trace_id(), self._ids.generate_span_id(), is_remote=False,
                              trace_flags=TraceFlags(TraceFlags.DEFAULT))
        return trace.set_span_in_context(NonRecordingSpan(own), parent)


def server_interceptors(domain: str, gate: Gate | None = None) -> list[grpc.aio.ServerInterceptor]:
    """In call order: the caller policy, admission, then the server span (trace context
    from the metadata; only the context where no span is recorded), then the error mapping
    inside it. `domain` is the service's name, the ErrorInfo domain of every refusal it sends."""
    spans = aio_server_interceptor(filter_=_not_grpc_own) if records_spans() else TraceContextInterceptor()
    return [PolicyInterceptor(), AdmissionInterceptor(gate, domain), spans, ServerInterceptor(domain)]


class CallerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Names the calling service in metadata (the identity when mTLS is off); with
    `inject_trace`, also the current trace context (W3C traceparent), where no span is
    recorded and OpenTelemetry's client interceptor is left out (client_interceptors)."""

    def __init__(self, caller: str, *, inject_trace: bool = False) -> None:
        self.caller = caller
        self.inject_trace = inject_trace

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        # This channel's identity, whatever the call site said.
        metadata = [(k, v) for k, v in client_call_details.metadata or [] if k != CALLER_HEADER]
        metadata.append((CALLER_HEADER, self.caller))
        if self.inject_trace:
            metadata.extend(_trace_headers())
        return await continuation(_with_metadata(client_call_details, metadata), request)


def _trace_headers() -> list[tuple[str, str]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def _with_metadata(details: grpc.aio.ClientCallDetails,
                   metadata: list[tuple[str, Any]]) -> grpc.aio.ClientCallDetails:
    """`details` with its metadata replaced by `metadata`, everything else as it was."""
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*metadata),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class TraceStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """The current trace context on server-streaming calls (the change feeds), where
    OpenTelemetry's client interceptors are left out (client_interceptors)."""

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        metadata = [*(client_call_details.metadata or []), *_trace_headers()]
        return await continuation(_with_metadata(client_call_details, metadata), request)


def client_interceptors(caller: str) -> list[grpc.aio.ClientInterceptor]:
    """The caller's name, then a CLIENT span per call with its context injected (W3C
    traceparent) into the metadata; where no span is recorded, the current context is
    injected by CallerInterceptor itself, one interceptor instead of two."""
    if not records_spans():
        return [CallerInterceptor(caller, inject_trace=True), TraceStreamInterceptor()]
    return [CallerInterceptor(caller), *aio_client_interceptors()]
