"""Refusals on the wire as google.rpc.Status with a google.rpc.ErrorInfo detail (AIP-193),
and the one reader of that detail on the client side. Callers branch on the reason (and
the status code); the message is for people and is never parsed.

The rich status travels in the `grpc-status-details-bin` trailer (grpcio-status); code and
message are sent as before, so a client that ignores the detail sees no change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from meshkit.errors import DomainError

# Reasons of the refusals that are not domain errors: the interceptors' own.
DEPENDENCY_UNAVAILABLE = "DEPENDENCY_UNAVAILABLE"
OVERLOADED = "OVERLOADED"


def rich_status(code: grpc.StatusCode, message: str, *, reason: str, domain: str,
                metadata: Mapping[str, str] | None = None) -> status_pb2.Status:
    """google.rpc.Status for `code` and `message`, its one detail an ErrorInfo."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {}))
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    return status


async def abort_status(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, *,
                       reason: str, domain: str, metadata: Mapping[str, str] | None = None) -> NoReturn:
    """End the call with the rich status. This is what `abort_with_status` does, but through
    `context.abort`: the OpenTelemetry wrapper records the span's status only there. Trailing
    metadata set earlier (retry hints) is kept: abort's own would replace it."""
    status = rpc_status.to_status(rich_status(code, message, reason=reason, domain=domain, metadata=metadata))
    earlier = tuple(context.trailing_metadata() or ())
    await context.abort(status.code, status.details, (*earlier, *status.trailing_metadata))
    raise AssertionError("context.abort returned")


async def abort_with(context: grpc.aio.ServicerContext, error: DomainError, domain: str) -> NoReturn:
    """End the call with the domain error's code, message, reason and metadata."""
    await abort_status(context, grpc.StatusCode[error.code.value], error.message,
                       reason=error.reason, domain=domain, metadata=error.metadata)


def status_code(name: str) -> grpc.StatusCode:
    """The status code a batch item's error names (its canonical name: FAILED_PRECONDITION);
    UNKNOWN for a name that is none."""
    code = grpc.StatusCode.__members__.get(name)
    return code if code is not None else grpc.StatusCode.UNKNOWN


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carries; None when it has none (an older peer, gRPC's
    own statuses such as DEADLINE_EXCEEDED) or the status detail contradicts the call."""
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        return None
    if status is None or status.code == code_pb2.OK:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def reason_of(err: grpc.aio.AioRpcError) -> str | None:
    """The failed call's ErrorInfo reason, None when it carries none."""
    info = error_info(err)
    return info.reason if info is not None else None
