"""How tools and tests reach the mesh: one place that picks certificates.

A Dialer holds the certificates of MESH_CERTS_DIR (default .run/certs, `make certs`), or
none under MESH_INSECURE=1 (then the chosen identity is only named in x-mesh-caller).
`routed()` gives a channel that sends each method to the listener serving it (admin
services on the admin port) under an identity meshkit.policy allows for it: the first
listed that the directory holds. A process holding the whole directory (a developer's
tools, the tests) can therefore act as any identity; it holds the CA key too. Services
never use this: each dials with its own certificate only (meshkit.transport.dial)."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import grpc

from meshkit.pki import IDENTITIES, CertDir
from meshkit.policy import POLICY, is_admin, role_of
from meshkit.settings import DEFAULT_PORTS, INSECURE_VAR, TlsSettings, admin_address_beside, env_bool
from meshkit.transport import addresses, channel_options, dial

INSECURE = TlsSettings("", "", "")


class Dialer:
    def __init__(self, certs: CertDir | None, only: Collection[str] | None = None,
                 bare_options: list[tuple[str, Any]] | None = None) -> None:
        """certs None: plaintext. `only`: the identities this process may present.
        bare_options: channels with these options and no client interceptors (the load
        generator: an interceptor per call costs more than the call); under plaintext the
        caller-naming interceptor stays, as the header is then the only identity."""
        self.certs = certs
        self.bare_options = bare_options
        held = certs.names() if certs is not None else list(IDENTITIES)
        self.held = [name for name in held if only is None or name in only]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, only: Collection[str] | None = None,
                 bare_options: list[tuple[str, Any]] | None = None) -> Dialer:
        source = os.environ if env is None else env
        if env_bool(INSECURE_VAR, False, source):
            return cls(None, only, bare_options)
        certs = CertDir.from_env(source)
        dialer = cls(certs, only, bare_options)
        if not certs.ca.is_file() or not dialer.held:
            raise SystemExit(f"no certificates in {certs.path}: run `make certs`, "
                             f"or set {INSECURE_VAR}=1 against a plaintext mesh")
        return dialer

    @property
    def insecure(self) -> bool:
        return self.certs is None

    def identity_for(self, method: str) -> str:
        """The first identity the policy lists for the method that this dialer holds."""
        for principal in POLICY.get(method, ()):
            if principal.startswith("role:"):
                holders = [n for n in self.held if role_of(n) == principal[5:]]
                if holders:
                    return holders[0]
            elif principal in self.held:
                return principal
        # Health, reflection, or nothing held fits: an operator if any (refused if wrong).
        return next((n for n in self.held if role_of(n) == "operator"), self.held[0])

    def tls_for(self, identity: str) -> TlsSettings:
        if self.certs is None:
            return INSECURE
        return TlsSettings(str(self.certs.ca), str(self.certs.cert(identity)), str(self.certs.key(identity)))

    def channel(self, address: str, identity: str) -> grpc.aio.Channel:
        """One channel presenting `identity`."""
        if self.certs is not None and self.bare_options is not None:
            target, options = channel_options(address, self.bare_options)
            return grpc.aio.secure_channel(target, self._credentials(identity), options=options)
        return dial(address, self.tls_for(identity), caller=identity)

    def _credentials(self, identity: str) -> grpc.ChannelCredentials:
        assert self.certs is not None
        return grpc.ssl_channel_credentials(
            root_certificates=self.certs.ca.read_bytes(),
            private_key=self.certs.key(identity).read_bytes(),
            certificate_chain=self.certs.cert(identity).read_bytes())

    def sync_channel(self, address: str, identity: str) -> grpc.Channel:
        """The same for synchronous callers (no interceptors)."""
        target, options = channel_options(address, [])
        if self.certs is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, self._credentials(identity), options=options)

    def routed(self, address: str, admin_address: str | None = None, identity: str | None = None,
               env: Mapping[str, str] | None = None) -> RoutedChannel:
        """A channel to one service: its main address, and its admin address (else found
        as admin_address_for finds it). `identity` fixes who calls (tests of refusals)."""
        admin = admin_address or admin_address_for(address, os.environ if env is None else env)
        return RoutedChannel(self, address, admin, identity)


def admin_address_for(address: str, env: Mapping[str, str]) -> str:
    """`<SVC>_ADMIN_ADDR` of the service whose `<SVC>_ADDR` is address, else its port + 100
    (each replica's, when address lists several)."""
    for service in DEFAULT_PORTS:
        upper = service.upper()
        if env.get(f"{upper}_ADDR") == address and env.get(f"{upper}_ADMIN_ADDR"):
            return env[f"{upper}_ADMIN_ADDR"]
    return ",".join(admin_address_beside(a) for a in addresses(address))


class RoutedChannel(grpc.aio.Channel):
    """A grpc.aio.Channel for stubs: each method on the right listener, under the right
    identity (a real channel per listener and identity, opened on first use)."""

    def __init__(self, dialer: Dialer, address: str, admin_address: str, identity: str | None) -> None:
        self.dialer, self.identity = dialer, identity
        self.address, self.admin_address = address, admin_address
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}

    def _pick(self, method: str) -> grpc.aio.Channel:
        address = self.admin_address if is_admin(method) else self.address
        identity = self.identity or self.dialer.identity_for(method)
        key = (address, identity)
        if key not in self._channels:
            self._channels[key] = self.dialer.channel(address, identity)
        return self._channels[key]

    def _main(self) -> grpc.aio.Channel:
        return self._pick("/grpc.health.v1.Health/Check")

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(method).unary_unary(method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(method).unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(method).stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._pick(method).stream_stream(method, *args, **kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._main().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._main().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._main().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)

    async def __aenter__(self) -> RoutedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
