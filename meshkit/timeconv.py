"""Timestamps between Python and protobuf."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from meshkit import validate


def to_ts(value: datetime | None) -> Timestamp:
    ts = Timestamp()
    if value is not None:
        ts.FromDatetime(value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def from_ts(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def from_request_ts(field: str, ts: Timestamp) -> datetime | None:
    """from_ts of a request field: a Timestamp outside 0001..9999 (or with bad nanos) is
    InvalidArgument naming `field`, not a ValueError deep in the handler."""
    try:
        return from_ts(ts)
    except ValueError as exc:
        raise validate.invalid(field, "not a valid timestamp (years 0001..9999)") from exc


def utcnow() -> datetime:
    return datetime.now(UTC)
