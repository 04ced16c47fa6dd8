"""The lease decision, without storage: who may hold a named job's lease, and how long
this process may act on a lease it was granted (no grpc, asyncpg or redis here).

A lease is granted to `holder` when nobody holds it, when `holder` already does (a
renewal), or when the previous holder's term has expired. The storage (meshkit.leader)
makes that decision in one statement on the database's clock; this module states it, and
decides locally how long a grant lasts: from the moment the request was *sent*, so a
reply delayed in transit or by a hung process only shortens the term this process
believes it has, never lengthens it past what the database granted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LeaseTerms:
    """ttl_s: how long a grant lasts without renewal (a killed or hung holder's job is
    taken over after at most this, plus one renew_s of the next replica's attempts);
    renew_s: how often the holder renews and the others try."""

    ttl_s: float = 3.0
    renew_s: float = 0.75

    def __post_init__(self) -> None:
        if not 0 < self.renew_s * 2 <= self.ttl_s:
            # Renewing less than twice per term loses the lease to one slow renewal.
            raise ValueError(f"renew_s {self.renew_s} must be at most half of ttl_s {self.ttl_s}")


def grantable(current_holder: str | None, expires_at: datetime | None, me: str, now: datetime) -> bool:
    """Whether `me` may take (or keep) the lease: free, already mine, or expired."""
    if current_holder is None or expires_at is None:
        return True
    return current_holder == me or expires_at <= now


@dataclass
class Tenure:
    """This process's view of one lease: when its latest grant was requested."""

    terms: LeaseTerms
    requested_at: float | None = None

    def granted(self, requested_at: float) -> None:
        self.requested_at = requested_at

    def refused(self) -> None:
        self.requested_at = None

    def held(self, now: float) -> bool:
        """True until ttl_s after the latest successful request was sent (monotonic time)."""
        return self.requested_at is not None and now < self.requested_at + self.terms.ttl_s
