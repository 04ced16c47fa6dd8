"""Listening and dialling. Handlers never see this: TLS is switched on by configuration.

An address is one `host:port`, or several separated by commas (the replicas of one
service, `<SVC>_ADDRS`). One address dials as it always did. Several become one channel
over a static list (`ipv4:h1:p1,h2:p2`) balanced round robin, with client-side health
checking (a replica whose grpc.health.v1 says NOT_SERVING -- draining, or without its
database -- gets no calls while another serves) and a retry policy for UNAVAILABLE only:
AIP-194, the one code that says the call did not run. DEADLINE_EXCEEDED, INTERNAL and the
rest may hide a write that committed, and are the caller's to judge."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

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

# Transport retries: a call refused UNAVAILABLE by one replica (it was stopping, or its
# connection broke before the call was sent) goes to the next; three attempts cover two
# replicas lost at once. The per-call deadline still bounds every attempt together.
RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # "" is the server's overall status (meshkit.server sets it with every service's).
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}],
}


def addresses(address: str) -> list[str]:
    """The `host:port`s of a comma-separated address, in order, each once."""
    return list(dict.fromkeys(part.strip() for part in address.split(",") if part.strip()))


def _ipv4(host: str) -> str:
    """The ipv4: scheme takes literals only: a name (localhost) is resolved once, here."""
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        return socket.gethostbyname(host)


def target_of(address: str) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target for `address` and the channel options it needs beyond the usual."""
    parts = addresses(address)
    if len(parts) <= 1:
        return address, []
    hosts = [part.rpartition(":") for part in parts]
    target = "ipv4:" + ",".join(f"{_ipv4(host)}:{port}" for host, _, port in hosts)
    # The default authority of a multi-address target is the whole list, which no
    # certificate names: present (and verify) the first replica's host, as one address would.
    first_host = hosts[0][0]
    return target, [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.default_authority", parts[0]),
        ("grpc.ssl_target_name_override", first_host),
    ]


def channel_options(address: str, base: list[tuple[str, Any]]) -> tuple[str, list[tuple[str, Any]]]:
    """target_of(address), its options appended to `base`."""
    target, extra = target_of(address)
    return target, [*base, *extra]


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
    """A channel to a peer service (one address, or its replicas comma-separated) with
    trace propagation and the caller's name."""
    interceptors = client_interceptors(caller)
    target, options = channel_options(address, _CHANNEL_OPTIONS)
    if not tls.enabled:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca_file).read_bytes(),
        private_key=Path(tls.key_file).read_bytes(),
        certificate_chain=Path(tls.cert_file).read_bytes(),
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
