"""Who is calling. With mutual TLS the peer certificate's common name is the identity;
without it the caller names itself in metadata (trusted only inside the mesh)."""

from __future__ import annotations

import grpc

CALLER_HEADER = "x-mesh-caller"
ROLE_HEADER = "x-mesh-role"


def caller_of(context: grpc.aio.ServicerContext) -> str:
    auth = context.auth_context()
    names = auth.get("x509_common_name") if auth else None
    if names:
        return names[0].decode()
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_HEADER:
            return str(value)
    return "anonymous"
