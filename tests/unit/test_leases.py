"""The lease decision: free, own or expired leases are granted; a grant lasts ttl_s from
when it was requested, however late the reply came."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshkit.leases import LeaseTerms, Tenure, grantable

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_grantable() -> None:
    assert grantable(None, None, "a", NOW)
    assert grantable("a", NOW + timedelta(seconds=2), "a", NOW)  # a renewal
    assert not grantable("b", NOW + timedelta(seconds=2), "a", NOW)
    assert grantable("b", NOW, "a", NOW)  # expired this instant
    assert grantable("b", NOW - timedelta(seconds=1), "a", NOW)


def test_tenure_runs_from_the_request() -> None:
    tenure = Tenure(LeaseTerms(ttl_s=3.0, renew_s=1.0))
    assert not tenure.held(0.0)
    tenure.granted(10.0)
    assert tenure.held(12.9)
    # A hung process that wakes after its term: not held, whatever it last heard.
    assert not tenure.held(13.0)
    tenure.granted(12.0)
    assert tenure.held(14.9)
    tenure.refused()
    assert not tenure.held(12.5)


def test_terms_renew_at_least_twice_per_term() -> None:
    with pytest.raises(ValueError, match="at most half"):
        LeaseTerms(ttl_s=3.0, renew_s=2.0)
    with pytest.raises(ValueError):
        LeaseTerms(ttl_s=3.0, renew_s=0.0)
