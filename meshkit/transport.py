"""Listening and dialling. Handlers never see this: TLS is switched on by configuration."""

from __future__ import annotations

from pathlib import Path

import grpc

from meshkit.interceptors import client_interceptors
from meshkit.settings import TlsSettings

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    # gRPC's reconnect backoff grows to 120 s by default: a peer back after a 10 s outage
    # would stay unreachable (calls failing fast) for tens of seconds more.
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


def bind(server: grpc.aio.Server, address: str, tls: TlsSettings) -> int:
    """Bind the server to address; returns the port actually bound (for port 0)."""
    if not tls.enabled:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=Path(tls.ca_file).read_bytes(),
        require_client_auth=True,
    )
    return server.add_secure_port(address, credentials)


def dial(address: str, tls: TlsSettings, caller: str) -> grpc.aio.Channel:
    """A channel to a peer service with trace propagation and the caller's name."""
    interceptors = client_interceptors(caller)
    if not tls.enabled:
        return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca_file).read_bytes(),
        private_key=Path(tls.key_file).read_bytes(),
        certificate_chain=Path(tls.cert_file).read_bytes(),
    )
    return grpc.aio.secure_channel(address, credentials, options=_CHANNEL_OPTIONS,
                                   interceptors=interceptors)
