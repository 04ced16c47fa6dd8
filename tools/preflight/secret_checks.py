"""Checks of what the mesh is keyed with: reward token keys and, when mutual TLS is
configured (MESH_TLS_CA/CERT/KEY), its files. They read the same environment the services
are started with, so run the pre-flight with the mesh's environment."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

from campaign.tokens import DEFAULT_KEYS, parse_keys
from meshkit.settings import TlsSettings
from tools.preflight.verdict import Result, judged, ok


def check_keys(raw_keys: str, active: str) -> Result:
    if not raw_keys.strip():
        return judged("keys", ["REWARD_TOKEN_KEYS is not set: the services would use the dev default key"],
                      "REWARD_TOKEN_KEYS unset")
    try:
        keys = parse_keys(raw_keys)
    except ValueError as exc:
        return judged("keys", [f"REWARD_TOKEN_KEYS: {exc}"], "REWARD_TOKEN_KEYS unreadable")
    dev_secrets = set(parse_keys(DEFAULT_KEYS).values())
    problems = [f"reward token key {kid} is the dev default secret" for kid, secret in keys.items()
                if secret in dev_secrets]
    signing = active or next(iter(keys))
    if signing not in keys:
        problems.append(f"REWARD_TOKEN_ACTIVE_KEY {signing!r} is not among REWARD_TOKEN_KEYS")
    # Key ids only: the secrets are never printed.
    detail = f"{len(keys)} key(s): {', '.join(keys)}; signing with {signing}"
    return judged("keys", problems, detail)


def not_after(path: Path) -> datetime:
    """Expiry of the first certificate in a PEM file. With the `cryptography` package when
    it is installed; otherwise with CPython's own certificate decoder (ssl's private
    `_test_decode_cert`, what ssl uses to describe peer certificates)."""
    try:
        from cryptography import x509
    except ImportError:
        decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
        return datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), UTC)
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def _file_problems(tls: TlsSettings, night_end: datetime) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    lines: list[str] = []
    files = {"MESH_TLS_CA": tls.ca_file, "MESH_TLS_CERT": tls.cert_file, "MESH_TLS_KEY": tls.key_file}
    for name, path in files.items():
        if not Path(path).is_file():
            problems.append(f"{name} {path} does not exist")
    if problems:
        return problems, lines
    try:
        ssl.create_default_context(cafile=tls.ca_file)
    except (ssl.SSLError, ValueError) as exc:
        problems.append(f"MESH_TLS_CA {tls.ca_file} does not parse: {exc}")
    try:
        # Loads both and checks that the key belongs to the certificate.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, ValueError) as exc:
        problems.append(f"MESH_TLS_CERT/KEY {tls.cert_file} do not load as a pair: {exc}")
    for name in ("MESH_TLS_CA", "MESH_TLS_CERT"):
        try:
            expires = not_after(Path(files[name]))
        except (ValueError, ssl.SSLError, OSError) as exc:
            problems.append(f"{name} {files[name]}: no readable expiry ({exc})")
            continue
        lines.append(f"{name} expires {expires:%Y-%m-%d %H:%M} UTC")
        if expires <= night_end:
            problems.append(f"{name} {files[name]} expires {expires.isoformat()}, "
                            f"before the night ends ({night_end.isoformat()})")
    return problems, lines


def check_certificates(tls: TlsSettings, night_end: datetime) -> Result:
    given = [v for v in (tls.ca_file, tls.cert_file, tls.key_file) if v]
    if not given:
        return ok("certificates", "TLS off (MESH_TLS_CA/CERT/KEY unset)")
    if len(given) != 3:
        return judged("certificates", ["MESH_TLS_CA, MESH_TLS_CERT and MESH_TLS_KEY must be set together"],
                      f"{len(given)} of 3 MESH_TLS_* set")
    problems, lines = _file_problems(tls, night_end)
    lines.append(f"must last until {night_end.isoformat()}")
    return judged("certificates", problems, "\n".join(lines))
