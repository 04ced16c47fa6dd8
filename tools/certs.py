#!/usr/bin/env python3
"""A local CA and one certificate per service, operator and the app edge (`make certs`).

    python tools/certs.py [--dir DIR] [--force]

Layout: meshkit/pki.py (MESH_CERTS_DIR, default .run/certs). Each certificate names its
identity as a SAN URI spiffe://mesh/<name> (what meshkit.identity reads), with the CN as
well for tools that only show CNs, and is valid for 127.0.0.1 and localhost so the same
file serves as server and client certificate. Existing files are kept unless --force:
rerunning is cheap and does not invalidate a running mesh."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshkit.pki import IDENTITIES, SPIFFE_PREFIX, CertDir

ROOT = Path(__file__).resolve().parent.parent

VALID_DAYS = 365


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    # Created 0600 from the start: never readable by others, even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _dates(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)


def make_ca(certs: CertDir, common_name: str = "mesh-local-ca", days: int = VALID_DAYS) -> None:
    certs.path.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _dates(days)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=True, crl_sign=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(certs.ca_key, key)
    certs.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issue(certs: CertDir, name: str, *, uri: bool = True, common_name: str | None = None,
          days: int = VALID_DAYS) -> None:
    """<name>.pem/.key signed by the CA in `certs`. uri=False and common_name="" make the
    odd certificates tests need (CN only, or no identity at all)."""
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cn = name if common_name is None else common_name
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if uri:
        sans.insert(0, x509.UniformResourceIdentifier(SPIFFE_PREFIX + name))
    start, end = _dates(days)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn) if cn else x509.Name([])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=not cn)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(certs.key(name), key)
    certs.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure(certs: CertDir, names: Iterable[str] = IDENTITIES, force: bool = False) -> list[str]:
    """Create the CA if missing and every certificate missing; returns the names issued."""
    if force or not (certs.ca.is_file() and certs.ca_key.is_file()):
        make_ca(certs)
        force = True  # a new CA invalidates every certificate signed by the old one
    issued = [name for name in names if force or not certs.has(name)]
    for name in issued:
        issue(certs, name)
    return issued


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="default: MESH_CERTS_DIR, else .run/certs")
    parser.add_argument("--force", action="store_true", help="a new CA and new certificates")
    args = parser.parse_args(argv)
    certs = CertDir(args.dir) if args.dir else CertDir.from_env()
    issued = ensure(certs, force=args.force)
    print(f"certs: {certs.path}: " + (f"issued {', '.join(issued)}" if issued else "all present"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
