import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.account.v1 import account_pb2 as _account_pb2
from mesh.gateway.v1 import gateway_pb2 as _gateway_pb2
from mesh.withdraw.v1 import withdraw_pb2 as _withdraw_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadChangesRequest(_message.Message):
    __slots__ = ("cursor", "limit")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    limit: int
    def __init__(self, cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ReadChangesResponse(_message.Message):
    __slots__ = ("changes", "next_cursor")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    next_cursor: str
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("cursor", "kind", "key", "payload_json", "create_time", "entry", "order", "order_refund", "gate", "channel_rate", "payout")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    ORDER_REFUND_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_RATE_FIELD_NUMBER: _ClassVar[int]
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    kind: str
    key: str
    payload_json: str
    create_time: _timestamp_pb2.Timestamp
    entry: EntryRecord
    order: OrderRecord
    order_refund: OrderRefundRecord
    gate: GateRecord
    channel_rate: ChannelRateRecord
    payout: PayoutRecord
    def __init__(self, cursor: _Optional[str] = ..., kind: _Optional[str] = ..., key: _Optional[str] = ..., payload_json: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entry: _Optional[_Union[EntryRecord, _Mapping]] = ..., order: _Optional[_Union[OrderRecord, _Mapping]] = ..., order_refund: _Optional[_Union[OrderRefundRecord, _Mapping]] = ..., gate: _Optional[_Union[GateRecord, _Mapping]] = ..., channel_rate: _Optional[_Union[ChannelRateRecord, _Mapping]] = ..., payout: _Optional[_Union[PayoutRecord, _Mapping]] = ...) -> None: ...

class EntryRecord(_message.Message):
    __slots__ = ("entry_id", "uid", "kind", "amount_fen", "order_id", "reward_id", "source", "refund_of", "balance_after_fen", "create_time")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REFUND_OF_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FEN_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    entry_id: int
    uid: int
    kind: _account_pb2.EntryKind
    amount_fen: int
    order_id: str
    reward_id: str
    source: str
    refund_of: int
    balance_after_fen: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, entry_id: _Optional[int] = ..., uid: _Optional[int] = ..., kind: _Optional[_Union[_account_pb2.EntryKind, str]] = ..., amount_fen: _Optional[int] = ..., order_id: _Optional[str] = ..., reward_id: _Optional[str] = ..., source: _Optional[str] = ..., refund_of: _Optional[int] = ..., balance_after_fen: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OrderRecord(_message.Message):
    __slots__ = ("order_id", "uid", "request_id", "amount_fen", "channel", "method_id", "from_state", "state", "reason", "failure_reason", "create_time", "update_time")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    uid: int
    request_id: str
    amount_fen: int
    channel: str
    method_id: str
    from_state: _withdraw_pb2.OrderState
    state: _withdraw_pb2.OrderState
    reason: str
    failure_reason: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., uid: _Optional[int] = ..., request_id: _Optional[str] = ..., amount_fen: _Optional[int] = ..., channel: _Optional[str] = ..., method_id: _Optional[str] = ..., from_state: _Optional[_Union[_withdraw_pb2.OrderState, str]] = ..., state: _Optional[_Union[_withdraw_pb2.OrderState, str]] = ..., reason: _Optional[str] = ..., failure_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OrderRefundRecord(_message.Message):
    __slots__ = ("order_id", "outcome")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    outcome: _withdraw_pb2.RefundState
    def __init__(self, order_id: _Optional[str] = ..., outcome: _Optional[_Union[_withdraw_pb2.RefundState, str]] = ...) -> None: ...

class GateRecord(_message.Message):
    __slots__ = ("version", "actor", "config")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    version: int
    actor: str
    config: _withdraw_pb2.GateConfig
    def __init__(self, version: _Optional[int] = ..., actor: _Optional[str] = ..., config: _Optional[_Union[_withdraw_pb2.GateConfig, _Mapping]] = ...) -> None: ...

class ChannelRateRecord(_message.Message):
    __slots__ = ("channel", "rate_per_second", "unlimited")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    channel: str
    rate_per_second: float
    unlimited: bool
    def __init__(self, channel: _Optional[str] = ..., rate_per_second: _Optional[float] = ..., unlimited: _Optional[bool] = ...) -> None: ...

class PayoutRecord(_message.Message):
    __slots__ = ("order_id", "uid", "channel", "method_id", "amount_fen", "state", "failure_reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int
    state: _gateway_pb2.PayoutState
    failure_reason: str
    def __init__(self, order_id: _Optional[str] = ..., uid: _Optional[int] = ..., channel: _Optional[str] = ..., method_id: _Optional[str] = ..., amount_fen: _Optional[int] = ..., state: _Optional[_Union[_gateway_pb2.PayoutState, str]] = ..., failure_reason: _Optional[str] = ...) -> None: ...
