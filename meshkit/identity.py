"""Who is calling: the authenticated identity of the peer.

With mutual TLS (the default) it is the certificate's SAN URI spiffe://mesh/<name>, or
its CN when the certificate has no SAN URI at all; a certificate naming neither is
"anonymous". The self-declared x-mesh-caller header is never read then. Only under
MESH_INSECURE=1, where nothing is authenticated anyway, does the header name the caller."""

from __future__ import annotations

import grpc

from meshkit.pki import SPIFFE_PREFIX

CALLER_HEADER = "x-mesh-caller"
ANONYMOUS = "anonymous"


def _decoded(values: list[bytes] | None) -> list[str]:
    return [v.decode(errors="replace") for v in values or ()]


def identity_of_auth(auth: dict[str, list[bytes]] | None) -> str | None:
    """The identity a TLS auth context proves; None when the connection is not TLS."""
    if not auth or b"ssl" not in (auth.get("transport_security_type") or ()):
        return None
    # peer_uri holds the SAN URIs; older gRPC cores list them only among all SANs.
    uris = _decoded(auth.get("peer_uri")) or [
        san for san in _decoded(auth.get("x509_subject_alternative_name")) if "://" in san]
    for uri in uris:
        if uri.startswith(SPIFFE_PREFIX) and len(uri) > len(SPIFFE_PREFIX):
            return uri[len(SPIFFE_PREFIX):]
    if uris:
        # A URI of another naming scheme: not one of ours, and not downgraded to the CN.
        return ANONYMOUS
    names = [n for n in _decoded(auth.get("x509_common_name")) if n]
    return names[0] if names else ANONYMOUS


def caller_of(context: grpc.aio.ServicerContext) -> str:
    identity = identity_of_auth(context.auth_context())
    if identity is not None:
        return identity
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_HEADER:
            return str(value)
    return ANONYMOUS
