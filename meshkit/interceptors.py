"""The one place where domain errors become gRPC statuses, and where every RPC gets its
admission check, its metrics and, on the client side, the caller name.
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
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor

from meshkit.admission import Admission, Gate, Refused
from meshkit.errors import DomainError, InvalidArgument
from meshkit.identity import CALLER_HEADER
from meshkit.outage import OutageLog, outage_of
from meshkit.telemetry import meter

log = logging.getLogger(__name__)
_meter = meter("meshkit.grpc")
_requests = _meter.create_counter("rpc.server.requests", description="RPCs by method and status")
_latency = _meter.create_histogram("rpc.server.duration", unit="ms", description="RPC latency")
_shed = _meter.create_counter("rpc.server.shed", description="RPCs refused by admission, by reason")

_outages = OutageLog(log)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _grpc_code(error: DomainError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code.value]


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


async def _refuse(method: str, refused: Refused, context: grpc.aio.ServicerContext) -> NoReturn:
    hint = str(refused.retry_after_ms)
    context.set_trailing_metadata(((RETRY_AFTER_HEADER, hint), (PUSHBACK_HEADER, hint)))
    attrs = {"rpc.method": method, "rpc.grpc.status": "RESOURCE_EXHAUSTED"}
    _requests.add(1, attrs)
    _shed.add(1, {"rpc.method": method, "reason": refused.reason})
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"overloaded; retry after {hint} ms")
    raise AssertionError("context.abort returned")


def _admitted(method: str, behavior: Behavior, admission: Admission, priority: int) -> Behavior:
    """Admission before everything else: a refused call costs no span, no parse check and
    no handler, so it is answered at once however busy the replica is."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            ticket = await admission.acquire(priority, context.time_remaining())
        except Refused as refused:
            await _refuse(method, refused, context)
        try:
            return await behavior(request, context)
        finally:
            admission.release(ticket)

    return handle


def _wrap_unary(method: str, behavior: Behavior) -> Behavior:
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
            await context.abort(_grpc_code(err), err.message)
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
                span.set_attribute("error.reason", "DEPENDENCY_UNAVAILABLE")
                await context.abort(grpc.StatusCode.UNAVAILABLE, outage.message)
        finally:
            attrs = {"rpc.method": method, "rpc.grpc.status": status}
            _requests.add(1, attrs)
            _latency.record((time.perf_counter() - started) * 1000.0, attrs)

    return handle


def _unary_mesh_call(method: str, handler: grpc.RpcMethodHandler | None) -> bool:
    # Health and reflection are streaming (or gRPC's own) and need none of this.
    return handler is not None and handler.unary_unary is not None and not method.startswith("/grpc.")


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Outermost: the methods the gate lists wait for a slot or are refused at once."""

    def __init__(self, gate: Gate | None = None) -> None:
        self.gate = gate

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
            _admitted(method, handler.unary_unary, gate.admission, priority),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Innermost: error mapping, undecodable requests and metrics for every unary mesh RPC."""

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
            _wrap_unary(method, handler.unary_unary),
            request_deserializer=_tolerant(deserialize) if deserialize else None,
            response_serializer=handler.response_serializer,
        )


def _not_grpc_own(details: grpc.HandlerCallDetails) -> bool:
    # Health checks (meshctl polls them every 100 ms) and reflection would be most of the
    # spans. A plain prefix test: the library's own filters cost a Protocol isinstance check
    # and path normalisation on every call.
    return not details.method.startswith("/grpc.")


def server_interceptors(gate: Gate | None = None) -> list[grpc.aio.ServerInterceptor]:
    """In call order: admission, then the server span (trace context from the metadata),
    then the error mapping inside it."""
    return [AdmissionInterceptor(gate), aio_server_interceptor(filter_=_not_grpc_own), ServerInterceptor()]


class CallerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Names the calling service in metadata (the identity when mTLS is off)."""

    def __init__(self, caller: str) -> None:
        self.caller = caller

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        metadata = list(client_call_details.metadata or [])
        metadata.append((CALLER_HEADER, self.caller))
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def client_interceptors(caller: str) -> list[grpc.aio.ClientInterceptor]:
    """The caller's name, then a CLIENT span per call with its context injected (W3C
    traceparent) into the metadata."""
    return [CallerInterceptor(caller), *aio_client_interceptors()]
