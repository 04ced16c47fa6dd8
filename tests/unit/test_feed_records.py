"""meshkit.feed_records: every stored kind is served as its typed record (with the
deprecated kind and JSON still next to it), and read back as the payload it was."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mesh.account.v1 import account_pb2
from mesh.feed.v1 import feed_pb2
from mesh.gateway.v1 import gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2
from meshkit.feed_records import read_change, typed_change

AT = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)
# As PostgreSQL's jsonb renders a timestamptz.
AT_JSON = "2026-12-01T08:30:15.123456+00:00"


def served(kind: str, payload: dict[str, Any]) -> feed_pb2.Change:
    return typed_change("12:34", kind, "key-1", payload, AT)


def test_an_entry_is_typed_with_its_kind_and_balance() -> None:
    debit = {"entry_id": 41, "uid": 7, "kind": "DEBIT", "amount_fen": 30, "order_id": "wd-1",
             "reward_id": None, "source": None, "refund_of": None, "balance_after_fen": 220,
             "created_at": AT_JSON}
    change = served("entry", debit)
    assert change.WhichOneof("record") == "entry"
    assert change.entry.kind == account_pb2.ENTRY_KIND_DEBIT
    assert (change.entry.entry_id, change.entry.uid, change.entry.amount_fen) == (41, 7, 30)
    assert change.entry.balance_after_fen == 220 and change.entry.create_time.ToDatetime(tzinfo=UTC) == AT
    assert read_change(change) == ("entry", {**debit, "created_at": AT})


def test_a_void_has_no_account_and_no_balance() -> None:
    void = {"entry_id": 42, "uid": None, "kind": "VOID", "amount_fen": 0, "order_id": "wd-2",
            "reward_id": None, "source": None, "refund_of": None, "balance_after_fen": None,
            "created_at": AT_JSON}
    change = served("entry", void)
    assert not change.entry.HasField("balance_after_fen")
    assert read_change(change) == ("entry", {**void, "created_at": AT})


def test_an_order_transition_is_typed_with_both_states() -> None:
    order = {"order_id": "wd-3", "uid": 9, "request_id": "r-1", "amount_fen": 500, "channel": "bank",
             "method_id": "m-1", "from_state": "PAYING", "state": "FAILED", "reason": "gateway failed",
             "failure_reason": "PAYOUT_FAILED", "created_at": AT_JSON, "updated_at": AT_JSON}
    change = served("order", order)
    assert (change.order.from_state, change.order.state) == (withdraw_pb2.ORDER_STATE_PAYING,
                                                             withdraw_pb2.ORDER_STATE_FAILED)
    assert read_change(change) == ("order", {**order, "created_at": AT, "updated_at": AT})


def test_a_new_order_has_no_from_state() -> None:
    change = served("order", {"order_id": "wd-4", "uid": 9, "from_state": None, "state": "PENDING_DEDUCT",
                              "amount_fen": 100, "created_at": AT_JSON, "updated_at": AT_JSON})
    assert change.order.from_state == withdraw_pb2.ORDER_STATE_UNSPECIFIED
    assert read_change(change)[1]["from_state"] is None


@pytest.mark.parametrize(("kind", "payload", "field", "expected"), [
    ("order_refund", {"order_id": "wd-5", "outcome": "VOIDED"}, "outcome", withdraw_pb2.REFUND_STATE_VOIDED),
    ("payout", {"order_id": "wd-6", "uid": 3, "channel": "alipay", "method_id": "m-2", "amount_fen": 700,
                "state": "SUCCEEDED", "failure_reason": ""}, "state", gateway_pb2.PAYOUT_STATE_SUCCEEDED),
    ("channel_rate", {"channel": "bank", "rate_per_second": 12.5, "unlimited": False},
     "rate_per_second", 12.5),
])
def test_each_kind_reads_back_as_it_was_written(kind: str, payload: dict[str, Any], field: str,
                                                expected: object) -> None:
    change = served(kind, payload)
    assert change.WhichOneof("record") == kind
    assert getattr(getattr(change, kind), field) == expected
    assert read_change(change) == (kind, payload)


def test_a_gate_change_carries_its_config() -> None:
    config = {"timezone": "Asia/Shanghai", "closed_start": "01:00", "closed_end": "02:00",
              "release_modulus": 10, "release_k": 3, "bind_prompt": "bind a card", "auto_release": True,
              "auto_release_drain_seconds": 60, "auto_release_step": 2}
    change = served("gate", {"version": 8, "actor": "operator-alice", "config": config})
    assert (change.gate.version, change.gate.config.version, change.gate.config.release_k) == (8, 8, 3)
    assert read_change(change) == ("gate", {"version": 8, "actor": "operator-alice", "config": config})


def test_the_deprecated_kind_and_json_are_still_served() -> None:
    payload = {"order_id": "wd-5", "outcome": "REFUNDED"}
    change = served("order_refund", payload)
    assert change.kind == "order_refund" and json.loads(change.payload_json) == payload


def test_an_unknown_kind_or_an_untypable_payload_is_read_from_its_json() -> None:
    unknown = served("k", {"x": 1})
    assert unknown.WhichOneof("record") is None
    assert read_change(unknown) == ("k", {"x": 1})
    odd = served("payout", {"order_id": "wd-7", "state": "TELEPORTED"})
    assert odd.WhichOneof("record") is None
    assert read_change(odd) == ("payout", {"order_id": "wd-7", "state": "TELEPORTED"})


def test_a_change_from_a_producer_older_than_the_records_is_read_from_its_json() -> None:
    old = feed_pb2.Change(cursor="1:1", kind="order", key="wd-8",
                          payload_json=json.dumps({"order_id": "wd-8", "state": "SUCCEEDED"}))
    assert read_change(old) == ("order", {"order_id": "wd-8", "state": "SUCCEEDED"})
