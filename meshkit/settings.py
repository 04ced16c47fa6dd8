"""Environment reading. Each service builds one frozen Settings from these, once, at start."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshkit.admission import AdmissionSettings, parse_priorities
from meshkit.pki import CERTS_DIR_VAR, CertDir

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

DEFAULT_PORTS = {
    "account_svc": 50051,
    "withdraw_svc": 50052,
    "payout_svc": 50053,
    "recon_svc": 50054,
    "gateway_mock": 50055,
}


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"environment variable {name}={raw!r} is not an integer") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"environment variable {name}={raw!r} is not a number") from exc


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    """A yes/no switch (from os.environ, or `env`). Anything but the usual spellings refuses
    to start: `ture` read as false once turned compensation off without a word."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None or raw == "":
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SystemExit(
        f"environment variable {name}={raw!r} is not a boolean; use one of "
        f"{', '.join(sorted(_TRUE))} or {', '.join(sorted(_FALSE))}"
    )


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]


POOLERS = ("none", "pgbouncer")


def pooler_from_env() -> str:
    """DATABASE_POOLER: what DATABASE_URL points at, PostgreSQL itself ("none") or a PgBouncer in
    transaction mode ("pgbouncer"), which changes how asyncpg must talk (meshkit.db)."""
    pooler = env_str("DATABASE_POOLER", "none").strip().lower()
    if pooler not in POOLERS:
        raise SystemExit(f"environment variable DATABASE_POOLER={pooler!r} is not one of "
                         f"{', '.join(POOLERS)}")
    return pooler


def addrs_of(service: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Every replica of a peer service (from os.environ, or `env`): `<SVC>_ADDR` (else
    localhost on the service's default port), then each of `<SVC>_ADDRS` not already
    named -- the list `make preflight` checks."""
    source = os.environ if env is None else env
    upper = service.upper()
    first = source.get(f"{upper}_ADDR") or f"127.0.0.1:{DEFAULT_PORTS[service]}"
    extra = [part.strip() for part in source.get(f"{upper}_ADDRS", "").split(",") if part.strip()]
    return list(dict.fromkeys([first, *extra]))


def addr_of(service: str, env: Mapping[str, str] | None = None) -> str:
    """Where a peer service listens, as meshkit.transport.dial takes it: one `host:port`,
    or its replicas comma-separated (dialled round robin)."""
    return ",".join(addrs_of(service, env))


# Admin services listen apart, so a network policy can keep them off the app network.
ADMIN_PORT_OFFSET = 100


def admin_address_beside(address: str) -> str:
    """The admin listener beside `host:port`: the same host, port + 100."""
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + ADMIN_PORT_OFFSET}"


def admin_addr_of(service: str) -> str:
    """Where a peer's admin services listen: `<SVC>_ADMIN_ADDR`, else each replica's
    address with its port + 100 (comma-separated, as addr_of)."""
    return env_str(f"{service.upper()}_ADMIN_ADDR",
                   ",".join(admin_address_beside(a) for a in addrs_of(service)))


TLS_VARS = ("MESH_TLS_CA", "MESH_TLS_CERT", "MESH_TLS_KEY")
INSECURE_VAR = "MESH_INSECURE"


@dataclass(frozen=True)
class TlsSettings:
    """Transport security: mutual TLS with these three files, or (all empty) plaintext,
    which only an explicit MESH_INSECURE=1 gets (`tls_from_env`)."""

    ca_file: str
    cert_file: str
    key_file: str

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file and self.cert_file and self.key_file)

    @classmethod
    def from_env(cls) -> TlsSettings:
        """The three MESH_TLS_* as they are (no checks: tls_from_env checks)."""
        return cls(
            ca_file=env_str("MESH_TLS_CA", ""),
            cert_file=env_str("MESH_TLS_CERT", ""),
            key_file=env_str("MESH_TLS_KEY", ""),
        )


def tls_from_env(service: str) -> TlsSettings:
    """MESH_TLS_CA/CERT/KEY, all three; or none of them and MESH_CERTS_DIR, from which the
    service takes ca.pem and its own <service>.pem/.key; or MESH_INSECURE=1 for plaintext.
    Anything else refuses to start, saying what is missing."""
    insecure = env_bool(INSECURE_VAR, False)
    given = {name: env_str(name, "") for name in TLS_VARS}
    missing = [name for name, value in given.items() if not value]
    if len(missing) < len(TLS_VARS):
        if missing:
            raise SystemExit(
                f"partial TLS configuration: {', '.join(missing)} unset while "
                f"{', '.join(n for n in TLS_VARS if n not in missing)} set; set all three, or none")
        if insecure:
            raise SystemExit(f"{INSECURE_VAR}=1 and MESH_TLS_* are both set; choose one")
        tls = TlsSettings(*given.values())
    elif env_str(CERTS_DIR_VAR, ""):
        if insecure:
            raise SystemExit(f"{INSECURE_VAR}=1 and {CERTS_DIR_VAR} are both set; choose one")
        certs = CertDir.from_env()
        tls = TlsSettings(str(certs.ca), str(certs.cert(service)), str(certs.key(service)))
    elif insecure:
        return TlsSettings("", "", "")
    else:
        raise SystemExit(
            "no TLS configuration: run `make certs` and set MESH_TLS_CA/CERT/KEY (or "
            f"{CERTS_DIR_VAR}) to this service's files in .run/certs, or set {INSECURE_VAR}=1 "
            "for plaintext without any authentication")
    absent = [path for path in (tls.ca_file, tls.cert_file, tls.key_file) if not os.path.isfile(path)]
    if absent:
        raise SystemExit(f"TLS files missing: {', '.join(absent)} (`make certs` creates them)")
    return tls


@dataclass(frozen=True)
class CommonSettings:
    """What every service reads: where it listens, its stores, its key namespace, TLS."""

    service: str
    host: str
    port: int
    # The admin services' listener (meshkit.policy.ADMIN_SERVICES); default port + 100.
    admin_port: int
    database_url: str
    db_schema: str
    redis_url: str
    key_prefix: str
    tls: TlsSettings
    grace_seconds: float
    admission: AdmissionSettings = field(default_factory=lambda: AdmissionSettings(False, 1, 0.0))
    # Methods ("Service/Method") this replica may refuse under load, by priority (0 is shed
    # last); every other method (internal, admin, health, reflection) is never refused.
    admitted: Mapping[str, int] = field(default_factory=dict)
    limits: ServerLimits = field(default_factory=lambda: ServerLimits())
    # What sits between the service and PostgreSQL ("none" or "pgbouncer", meshkit.db.POOLERS).
    database_pooler: str = "none"

    @classmethod
    def from_env(cls, service: str, db_schema: str, admitted: Sequence[str] = ()) -> CommonSettings:
        upper = service.upper()
        try:
            priorities = parse_priorities(env_list(f"{upper}_ADMISSION_METHODS", list(admitted)))
        except ValueError as exc:
            raise SystemExit(f"{upper}_ADMISSION_METHODS: {exc}") from exc
        port = env_int(f"{upper}_PORT", DEFAULT_PORTS[service])
        return cls(
            service=service,
            host=env_str(f"{upper}_HOST", "127.0.0.1"),
            port=port,
            admin_port=env_int(f"{upper}_ADMIN_PORT", port + ADMIN_PORT_OFFSET if port else 0),
            database_url=env_str("DATABASE_URL", DEFAULT_DATABASE_URL),
            database_pooler=pooler_from_env(),
            db_schema=env_str(f"{upper}_DB_SCHEMA", db_schema),
            redis_url=env_str("REDIS_URL", DEFAULT_REDIS_URL),
            key_prefix=env_str("MESH_KEY_PREFIX", "mesh"),
            tls=tls_from_env(service),
            grace_seconds=env_float("MESH_SHUTDOWN_GRACE_S", 10.0),
            admission=admission_from_env(),
            admitted=priorities,
            limits=ServerLimits.from_env(),
        )


MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts, whoever calls: a request larger than max_receive_bytes is
    refused (RESOURCE_EXHAUSTED) before any handler runs; replies above max_send_bytes
    fail; at most max_concurrent_rpcs calls run at once, more are refused at once
    (RESOURCE_EXHAUSTED) rather than queued without bound."""

    max_receive_bytes: int = 4 * MIB
    # Larger than receive: the biggest legitimate replies (ListPayouts, change-feed pages,
    # daily reports) run to a few MiB.
    max_send_bytes: int = 16 * MIB
    max_concurrent_rpcs: int = 1000

    @classmethod
    def from_env(cls) -> ServerLimits:
        limits = cls(
            max_receive_bytes=env_int("MESH_MAX_RECEIVE_BYTES", 4 * MIB),
            max_send_bytes=env_int("MESH_MAX_SEND_BYTES", 16 * MIB),
            max_concurrent_rpcs=env_int("MESH_MAX_CONCURRENT_RPCS", 1000),
        )
        for name, value in (("MESH_MAX_RECEIVE_BYTES", limits.max_receive_bytes),
                            ("MESH_MAX_SEND_BYTES", limits.max_send_bytes),
                            ("MESH_MAX_CONCURRENT_RPCS", limits.max_concurrent_rpcs)):
            if value < 1:
                raise SystemExit(f"{name} must be at least 1, not {value}")
        return limits


def admission_from_env() -> AdmissionSettings:
    """MESH_ADMISSION_ENABLED (default on), MESH_ADMISSION_MAX_INFLIGHT (admitted calls
    running at once per replica, default 16), MESH_ADMISSION_QUEUE_MS (longest expected wait
    a confirm may queue for, default 50; views get half, order queries a quarter)."""
    return AdmissionSettings(
        enabled=env_bool("MESH_ADMISSION_ENABLED", True),
        max_inflight=max(1, env_int("MESH_ADMISSION_MAX_INFLIGHT", 16)),
        queue_s=max(0, env_int("MESH_ADMISSION_QUEUE_MS", 50)) / 1000.0,
    )
