"""The pre-flight's certificate check on real files made with openssl: present, parsing,
key matching the certificate, and lasting past the end of the night."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshkit.settings import TlsSettings
from tools.preflight.secret_checks import check_certificates, not_after
from tools.preflight.verdict import Status


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
             "-subj", "/CN=pf-ca", cwd=d)
    _openssl("req", *ec, "-keyout", "svc.key", "-out", "svc.csr", "-subj", "/CN=withdraw_svc", cwd=d)
    _openssl("x509", "-req", "-in", "svc.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "svc.pem", "-days", "2", cwd=d)
    _openssl("req", *ec, "-keyout", "other.key", "-out", "other.csr", "-subj", "/CN=other", cwd=d)
    return d


def tls(d: Path, key: str = "svc.key") -> TlsSettings:
    return TlsSettings(str(d / "ca.pem"), str(d / "svc.pem"), str(d / key))


def test_certificates_lasting_past_the_night_are_ok(pki: Path) -> None:
    result = check_certificates(tls(pki), datetime.now(UTC) + timedelta(days=1))
    assert result.status is Status.OK, result.detail
    assert "MESH_TLS_CERT expires" in result.detail


def test_a_certificate_expiring_before_the_night_ends_fails(pki: Path) -> None:
    night_end = datetime.now(UTC) + timedelta(days=3)
    result = check_certificates(tls(pki), night_end)
    assert result.status is Status.FAIL
    expires = not_after(pki / "svc.pem")
    assert result.reason == (f"MESH_TLS_CERT {pki / 'svc.pem'} expires {expires.isoformat()}, "
                             f"before the night ends ({night_end.isoformat()})")


def test_missing_file_mismatched_key_and_partial_settings_fail(pki: Path) -> None:
    night_end = datetime.now(UTC)
    missing = TlsSettings(str(pki / "ca.pem"), str(pki / "nope.pem"), str(pki / "svc.key"))
    assert check_certificates(missing, night_end).reason == f"MESH_TLS_CERT {pki / 'nope.pem'} does not exist"
    mismatch = check_certificates(tls(pki, key="other.key"), night_end)
    assert mismatch.status is Status.FAIL
    assert "do not load as a pair" in mismatch.reason
    partial = TlsSettings(str(pki / "ca.pem"), "", "")
    assert check_certificates(partial, night_end).reason == (
        "MESH_TLS_CA, MESH_TLS_CERT and MESH_TLS_KEY must be set together")
    assert check_certificates(TlsSettings("", "", ""), night_end).status is Status.OK
