"""Where the mesh's certificates live (written by `make certs`, tools/certs.py):

    <dir>/ca.pem             the local CA every process trusts
    <dir>/ca.key             its private key (only tools/certs.py reads it)
    <dir>/<name>.pem         a certificate whose identity is spiffe://mesh/<name>
    <dir>/<name>.key         its private key (0600)

<name> is a service (account_svc ...), an operator (operator-alice, approver-carol,
viewer-dave: the prefix is the role) or the app edge (app-edge). The directory is
MESH_CERTS_DIR, else .run/certs in the repository."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SERVICE_IDENTITIES = ("account_svc", "withdraw_svc", "payout_svc", "recon_svc", "gateway_mock")
PEOPLE_IDENTITIES = ("operator-alice", "operator-bob", "approver-carol", "viewer-dave", "app-edge")
# What `make certs` issues.
IDENTITIES = (*SERVICE_IDENTITIES, *PEOPLE_IDENTITIES)

CERTS_DIR_VAR = "MESH_CERTS_DIR"
DEFAULT_CERTS_DIR = Path(__file__).resolve().parent.parent / ".run" / "certs"
SPIFFE_PREFIX = "spiffe://mesh/"


@dataclass(frozen=True)
class CertDir:
    path: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CertDir:
        source = os.environ if env is None else env
        return cls(Path(source.get(CERTS_DIR_VAR) or DEFAULT_CERTS_DIR))

    @property
    def ca(self) -> Path:
        return self.path / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.path / "ca.key"

    def cert(self, name: str) -> Path:
        return self.path / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.path / f"{name}.key"

    def has(self, name: str) -> bool:
        return self.cert(name).is_file() and self.key(name).is_file()

    def names(self) -> list[str]:
        """Identities with both a certificate and a key here, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.pem") if p.stem != "ca" and self.has(p.stem))
