"""What the pre-flight checks against, read from the mesh's own environment (the same
variables the services read: run it with `.run/devstack.env` or the deployment's env) and
from its command line."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from meshkit.db import SHARED_MIGRATIONS
from meshkit.pki import CertDir
from meshkit.settings import (
    ADMIN_PORT_OFFSET,
    DEFAULT_DATABASE_URL,
    DEFAULT_PORTS,
    DEFAULT_REDIS_URL,
    INSECURE_VAR,
    TlsSettings,
    env_bool,
)

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway_mock", "account_svc", "withdraw_svc", "payout_svc", "recon_svc")
# Each service's schema unless <SVC>_DB_SCHEMA says otherwise (as in its settings.py).
DEFAULT_SCHEMAS = {"gateway_mock": "gateway", "account_svc": "account", "withdraw_svc": "withdraw",
                   "payout_svc": "payout", "recon_svc": "recon"}
# Feeds recon follows (RECON_FEEDS), as recon_svc.settings.FEED_SERVICES names them.
DEFAULT_FEEDS = ("account", "withdraw", "gateway")
PERSISTENCE_MODES = ("none", "aof", "rdb")

CHECKS = (
    "health", "migrations", "gate", "rates", "capacity", "dlq", "compensation", "recon-feeds",
    "discrepancies", "keys", "certificates", "autovacuum", "redis-persistence", "clock",
)


@dataclass(frozen=True)
class Expectations:
    # PREFLIGHT_REDIS_PERSISTENCE: none (default), aof or rdb.
    redis_persistence: str
    # PREFLIGHT_FEED_LAG_S: how far behind its feeds recon may be (default 5 s).
    feed_lag_s: float
    # PREFLIGHT_CLOCK_OFFSET_MS: largest clock offset to Redis and PostgreSQL (default 100).
    clock_offset_ms: float
    # --gate-window HH:MM-HH:MM and --release K/M: the plan the gate must match, when given.
    gate_window: tuple[str, str] | None
    release: tuple[int, int] | None
    # --night-end: certificates must outlive it (default: next gate opening + 24 h).
    night_end: datetime | None


@dataclass(frozen=True)
class Config:
    addresses: Mapping[str, tuple[str, ...]]
    # Where each service's admin listener is (<SVC>_ADMIN_ADDR, else its address's port + 100).
    admin_addresses: Mapping[str, str]
    schemas: Mapping[str, str]
    feeds: tuple[str, ...]
    database_url: str
    redis_url: str
    # The pre-flight's own client certificate: MESH_TLS_* if set, else viewer-dave's in
    # MESH_CERTS_DIR (read-only is all it needs); empty under MESH_INSECURE=1.
    tls: TlsSettings
    token_keys: str
    token_active_key: str
    expect: Expectations
    waived: frozenset[str]
    timeout_s: float


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "")
    return value if value.strip() else default


def addresses_of(service: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """`<SVC>_ADDR` (the address peers use) plus every replica in `<SVC>_ADDRS`."""
    upper = service.upper()
    primary = _get(env, f"{upper}_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}")
    extra = [a.strip() for a in env.get(f"{upper}_ADDRS", "").split(",") if a.strip()]
    return tuple(dict.fromkeys([primary, *extra]))


def admin_address_of(service: str, env: Mapping[str, str]) -> str:
    host, _, port = addresses_of(service, env)[0].rpartition(":")
    return _get(env, f"{service.upper()}_ADMIN_ADDR", f"{host}:{int(port) + ADMIN_PORT_OFFSET}")


VIEWER = "viewer-dave"


def client_tls(env: Mapping[str, str]) -> TlsSettings:
    given = TlsSettings(ca_file=env.get("MESH_TLS_CA", ""), cert_file=env.get("MESH_TLS_CERT", ""),
                        key_file=env.get("MESH_TLS_KEY", ""))
    if given.ca_file or given.cert_file or given.key_file:
        return given  # checked (and judged when partial) by the certificates check
    try:
        insecure = env_bool(INSECURE_VAR, False, env)
    except SystemExit as exc:
        raise UsageError(str(exc)) from exc
    if insecure:
        return given
    certs = CertDir.from_env(env)
    return TlsSettings(str(certs.ca), str(certs.cert(VIEWER)), str(certs.key(VIEWER)))


def migration_files(service: str) -> list[str]:
    """The migration names a service's schema must have applied, as meshkit.db.migrate
    records them: the shared ones, then the service's own."""
    files = sorted(SHARED_MIGRATIONS.glob("*.sql")) + sorted((ROOT / service / "migrations").glob("*.sql"))
    return [f"{p.parent.parent.name}/{p.name}" for p in files]


class UsageError(Exception):
    pass


def _window(value: str) -> tuple[str, str]:
    start, sep, end = value.partition("-")
    if not sep or not start or not end:
        raise argparse.ArgumentTypeError(f"{value!r} is not HH:MM-HH:MM")
    return start, end


def _release(value: str) -> tuple[int, int]:
    k, sep, m = value.partition("/")
    try:
        if not sep:
            raise ValueError
        return int(k), int(m)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not K/M (e.g. 1/10)") from exc


def _iso(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO time") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no UTC offset (e.g. 2026-12-02T10:00+08:00)")
    return moment


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preflight", description="Go/no-go checks of the running mesh before the campaign night.",
        epilog="Exit status: 0 GO, 1 NO-GO, 2 usage error. Checks: " + ", ".join(CHECKS),
    )
    p.add_argument("--waive", action="append", default=[], metavar="CHECK",
                   help="turn a FAIL of CHECK into WAIVED (repeatable; printed, never silent)")
    p.add_argument("--night-end", type=_iso, default=None,
                   help="ISO time the certificates must outlive (default: next gate opening + 24 h)")
    p.add_argument("--gate-window", type=_window, default=None, metavar="HH:MM-HH:MM",
                   help="the closed window the gate must have")
    p.add_argument("--release", type=_release, default=None, metavar="K/M",
                   help="the release cohorts the gate must have (uid mod M < K)")
    p.add_argument("--timeout", type=float, default=3.0, help="deadline of each call, seconds")
    return p


def from_args(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    """Raises UsageError (exit 2) for a bad argument or setting, and lets argparse exit 2."""
    args = parser().parse_args(list(argv))
    unknown = sorted(set(args.waive) - set(CHECKS))
    if unknown:
        raise UsageError(f"--waive: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    persistence = _get(env, "PREFLIGHT_REDIS_PERSISTENCE", "none").strip().lower()
    if persistence not in PERSISTENCE_MODES:
        raise UsageError(f"PREFLIGHT_REDIS_PERSISTENCE={persistence!r}: "
                         f"one of {', '.join(PERSISTENCE_MODES)}")
    try:
        lag = float(_get(env, "PREFLIGHT_FEED_LAG_S", "5"))
        offset = float(_get(env, "PREFLIGHT_CLOCK_OFFSET_MS", "100"))
    except ValueError as exc:
        raise UsageError(f"PREFLIGHT_FEED_LAG_S / PREFLIGHT_CLOCK_OFFSET_MS: {exc}") from exc
    raw_feeds = _get(env, "RECON_FEEDS", ",".join(DEFAULT_FEEDS))
    feeds = tuple(f.strip() for f in raw_feeds.split(",") if f.strip())
    return Config(
        addresses={svc: addresses_of(svc, env) for svc in SERVICES},
        admin_addresses={svc: admin_address_of(svc, env) for svc in SERVICES},
        schemas={svc: _get(env, f"{svc.upper()}_DB_SCHEMA", DEFAULT_SCHEMAS[svc]) for svc in SERVICES},
        feeds=feeds,
        database_url=_get(env, "DATABASE_URL", DEFAULT_DATABASE_URL),
        redis_url=_get(env, "REDIS_URL", DEFAULT_REDIS_URL),
        tls=client_tls(env),
        token_keys=env.get("REWARD_TOKEN_KEYS", ""),
        token_active_key=env.get("REWARD_TOKEN_ACTIVE_KEY", ""),
        expect=Expectations(persistence, lag, offset, args.gate_window, args.release, args.night_end),
        waived=frozenset(args.waive),
        timeout_s=args.timeout,
    )
