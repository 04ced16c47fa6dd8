"""The change feed's typed records (mesh.feed.v1.Change.record), both ways.

Producers store a kind and a JSON payload (SQL triggers write some of them), so the feed
servicer types each change as it serves it: `typed_change`. Readers take the typed record
back as the payload mapping the feed has always described: `read_change`. The deprecated
`kind` and `payload_json` are still served for one release; a reader falls back to them
only for a change without a record (a producer older than the records, or a kind this
version does not know)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from mesh.account.v1 import account_pb2
from mesh.feed.v1 import feed_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.timeconv import from_ts, to_ts

log = logging.getLogger(__name__)

Payload = Mapping[str, Any]


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value)) if value else None


def _label(prefix: str, name: Any) -> str | None:
    """The enum label `prefix + name` (the constructors take labels); None (UNSPECIFIED) for
    no name. A label the enum does not have makes the constructor raise ValueError: the
    payload is not one this version can type."""
    return f"{prefix}{name}" if name else None


def _enum_name(enum: Any, prefix: str, number: int) -> str | None:
    return None if number == 0 else str(enum.Name(number)).removeprefix(prefix)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# -- payload -> record (the producer side) ---------------------------------------------------


def _entry(p: Payload) -> feed_pb2.EntryRecord:
    record = feed_pb2.EntryRecord(
        entry_id=int(p["entry_id"]), uid=int(p.get("uid") or 0),
        kind=_label("ENTRY_KIND_", p.get("kind")),
        amount_fen=int(p.get("amount_fen") or 0), order_id=_text(p.get("order_id")),
        reward_id=_text(p.get("reward_id")), source=_text(p.get("source")),
        refund_of=int(p.get("refund_of") or 0), create_time=to_ts(_time(p.get("created_at"))),
    )
    if p.get("balance_after_fen") is not None:
        record.balance_after_fen = int(p["balance_after_fen"])
    return record


def _order(p: Payload) -> feed_pb2.OrderRecord:
    return feed_pb2.OrderRecord(
        order_id=_text(p.get("order_id")), uid=int(p.get("uid") or 0), request_id=_text(p.get("request_id")),
        amount_fen=int(p.get("amount_fen") or 0), channel=_text(p.get("channel")),
        method_id=_text(p.get("method_id")),
        from_state=_label("ORDER_STATE_", p.get("from_state")),
        state=_label("ORDER_STATE_", p.get("state")),
        reason=_text(p.get("reason")), failure_reason=_text(p.get("failure_reason")),
        create_time=to_ts(_time(p.get("created_at"))), update_time=to_ts(_time(p.get("updated_at"))),
    )


def _order_refund(p: Payload) -> feed_pb2.OrderRefundRecord:
    return feed_pb2.OrderRefundRecord(
        order_id=_text(p.get("order_id")),
        outcome=_label("REFUND_STATE_", p.get("outcome")))


_GATE_FIELDS = ("timezone", "closed_start", "closed_end", "release_modulus", "release_k", "bind_prompt",
                "auto_release", "auto_release_drain_seconds", "auto_release_step")


def _gate(p: Payload) -> feed_pb2.GateRecord:
    version = int(p.get("version") or 0)
    config: Payload = p.get("config") or {}
    return feed_pb2.GateRecord(version=version, actor=_text(p.get("actor")), config=withdraw_pb2.GateConfig(
        version=version, **{name: config[name] for name in _GATE_FIELDS if config.get(name) is not None}))


def _channel_rate(p: Payload) -> feed_pb2.ChannelRateRecord:
    return feed_pb2.ChannelRateRecord(channel=_text(p.get("channel")),
                                      rate_per_second=float(p.get("rate_per_second") or 0.0),
                                      unlimited=bool(p.get("unlimited")))


def _payout(p: Payload) -> feed_pb2.PayoutRecord:
    return feed_pb2.PayoutRecord(
        order_id=_text(p.get("order_id")), uid=int(p.get("uid") or 0), channel=_text(p.get("channel")),
        method_id=_text(p.get("method_id")), amount_fen=int(p.get("amount_fen") or 0),
        state=_label("PAYOUT_STATE_", p.get("state")),
        failure_reason=_text(p.get("failure_reason")))


# Kind (as stored) -> the oneof field of Change.record and how to build it.
_TYPERS: dict[str, Callable[[Payload], Message]] = {
    "entry": _entry, "order": _order, "order_refund": _order_refund, "gate": _gate,
    "channel_rate": _channel_rate, "payout": _payout,
}


def record_of(kind: str, payload: Payload) -> Message | None:
    """The typed record of a stored change; None for a kind this version does not know or a
    payload it cannot type (the change is still served with its JSON)."""
    typer = _TYPERS.get(kind)
    if typer is None:
        return None
    try:
        return typer(payload)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("feed change of kind %s not typed: %s", kind, exc)
        return None


def typed_change(cursor: str, kind: str, key: str, payload: Payload, created_at: datetime) -> feed_pb2.Change:
    """The Change as served: the typed record, and for one release the deprecated kind and
    payload_json next to it."""
    change = feed_pb2.Change(cursor=cursor, kind=kind, key=key, create_time=to_ts(created_at),
                             payload_json=json.dumps(payload, sort_keys=True))
    record = record_of(kind, payload)
    if record is not None:
        getattr(change, kind).CopyFrom(record)
    return change


# -- record -> payload (the reader side) -----------------------------------------------------


def _entry_payload(r: feed_pb2.EntryRecord) -> dict[str, Any]:
    return {
        "entry_id": r.entry_id, "uid": r.uid or None,
        "kind": _enum_name(account_pb2.EntryKind, "ENTRY_KIND_", r.kind), "amount_fen": r.amount_fen,
        "order_id": r.order_id or None, "reward_id": r.reward_id or None, "source": r.source or None,
        "refund_of": r.refund_of or None,
        "balance_after_fen": r.balance_after_fen if r.HasField("balance_after_fen") else None,
        "created_at": from_ts(r.create_time),
    }


def _order_payload(r: feed_pb2.OrderRecord) -> dict[str, Any]:
    return {
        "order_id": r.order_id, "uid": r.uid, "request_id": r.request_id, "amount_fen": r.amount_fen,
        "channel": r.channel, "method_id": r.method_id,
        "from_state": _enum_name(withdraw_pb2.OrderState, "ORDER_STATE_", r.from_state),
        "state": _enum_name(withdraw_pb2.OrderState, "ORDER_STATE_", r.state),
        "reason": r.reason, "failure_reason": r.failure_reason,
        "created_at": from_ts(r.create_time), "updated_at": from_ts(r.update_time),
    }


def _order_refund_payload(r: feed_pb2.OrderRefundRecord) -> dict[str, Any]:
    return {"order_id": r.order_id,
            "outcome": _enum_name(withdraw_pb2.RefundState, "REFUND_STATE_", r.outcome)}


def _gate_payload(r: feed_pb2.GateRecord) -> dict[str, Any]:
    return {"version": r.version, "actor": r.actor,
            "config": {name: getattr(r.config, name) for name in _GATE_FIELDS}}


def _channel_rate_payload(r: feed_pb2.ChannelRateRecord) -> dict[str, Any]:
    return {"channel": r.channel, "rate_per_second": r.rate_per_second, "unlimited": r.unlimited}


def _payout_payload(r: feed_pb2.PayoutRecord) -> dict[str, Any]:
    return {
        "order_id": r.order_id, "uid": r.uid, "channel": r.channel, "method_id": r.method_id,
        "amount_fen": r.amount_fen, "state": _enum_name(gateway_pb2.PayoutState, "PAYOUT_STATE_", r.state),
        "failure_reason": r.failure_reason,
    }


_READERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "entry": _entry_payload, "order": _order_payload, "order_refund": _order_refund_payload,
    "gate": _gate_payload, "channel_rate": _channel_rate_payload, "payout": _payout_payload,
}


def read_change(change: feed_pb2.Change) -> tuple[str, dict[str, Any]]:
    """(kind, payload) of a served change, from its typed record. A change without one
    (an older producer, a kind unknown here) is read from its deprecated JSON instead."""
    kind = change.WhichOneof("record")
    if kind is not None:
        return kind, _READERS[kind](getattr(change, kind))
    try:
        payload = json.loads(change.payload_json or "{}")
    except ValueError:
        payload = {}
    return change.kind, payload if isinstance(payload, dict) else {}
