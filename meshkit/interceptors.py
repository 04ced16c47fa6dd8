"""The one place where domain errors become gRPC statuses, and where every RPC gets its
server span, its metrics and, on the client side, the trace context and caller name.
A dependency that is away (meshkit.outage) is UNAVAILABLE, not INTERNAL: callers retry
UNAVAILABLE and count INTERNAL as a failure (payout_svc would dead-letter the order)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshkit.admission import Admission, Gate, Refused
from meshkit.errors import DomainError, InvalidArgument
from meshkit.identity import CALLER_HEADER
from meshkit.outage import OutageLog, outage_of
from meshkit.telemetry import extract_from, inject_into, meter

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("meshkit.grpc")
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
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        carrier = {k: str(v) for k, v in (context.invocation_metadata() or ())}
        started = time.perf_counter()
        status = "OK"
        with _tracer.start_as_current_span(
            method, context=extract_from(carrier), kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.method": method},
        ) as span:
            try:
                if isinstance(request, _Undecodable):
                    raise InvalidArgument(f"request: not a valid message: {request.error}"[:300],
                                          reason="UNDECODABLE_REQUEST")
                return await behavior(request, context)
            except DomainError as err:
                status = err.code.value
                span.set_status(Status(StatusCode.ERROR, err.message))
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
                    span.set_status(Status(StatusCode.ERROR, "internal"))
                    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see server logs")
                else:
                    status = "UNAVAILABLE"
                    _outages.warn(method, outage)
                    span.set_status(Status(StatusCode.ERROR, outage.message))
                    span.set_attribute("error.reason", "DEPENDENCY_UNAVAILABLE")
                    await context.abort(grpc.StatusCode.UNAVAILABLE, outage.message)
            finally:
                attrs = {"rpc.method": method, "rpc.grpc.status": status}
                _requests.add(1, attrs)
                _latency.record((time.perf_counter() - started) * 1000.0, attrs)

    return handle


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, gate: Gate | None = None) -> None:
        self.gate = gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        # Health and reflection are streaming and need none of this.
        if handler is None or handler.unary_unary is None or method.startswith("/grpc."):
            return handler
        deserialize = handler.request_deserializer
        behavior = _wrap_unary(method, handler.unary_unary)
        priority = self.gate.priority_of(method) if self.gate is not None else None
        if priority is not None and self.gate is not None and self.gate.admission is not None:
            behavior = _admitted(method, behavior, self.gate.admission, priority)
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=_tolerant(deserialize) if deserialize else None,
            response_serializer=handler.response_serializer,
        )


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, caller: str) -> None:
        self.caller = caller

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT,
                                           attributes={"rpc.system": "grpc"}) as span:
            metadata = list(client_call_details.metadata or [])
            metadata.extend(inject_into({}).items())
            metadata.append((CALLER_HEADER, self.caller))
            details = grpc.aio.ClientCallDetails(
                method=client_call_details.method,
                timeout=client_call_details.timeout,
                metadata=grpc.aio.Metadata(*metadata),
                credentials=client_call_details.credentials,
                wait_for_ready=client_call_details.wait_for_ready,
            )
            call = await continuation(details, request)
            try:
                await call
            except grpc.aio.AioRpcError as err:
                span.set_status(Status(StatusCode.ERROR, err.code().name))
            return call
