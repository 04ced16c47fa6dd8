import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.admin.v1 import admin_pb2 as _admin_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayoutState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYOUT_STATE_UNSPECIFIED: _ClassVar[PayoutState]
    PAYOUT_STATE_PROCESSING: _ClassVar[PayoutState]
    PAYOUT_STATE_SUCCEEDED: _ClassVar[PayoutState]
    PAYOUT_STATE_FAILED: _ClassVar[PayoutState]
PAYOUT_STATE_UNSPECIFIED: PayoutState
PAYOUT_STATE_PROCESSING: PayoutState
PAYOUT_STATE_SUCCEEDED: PayoutState
PAYOUT_STATE_FAILED: PayoutState

class Payout(_message.Message):
    __slots__ = ("order_id", "uid", "channel", "method_id", "amount_fen", "state", "failure_reason", "create_time", "complete_time", "request_time")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int
    state: PayoutState
    failure_reason: str
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    request_time: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., uid: _Optional[int] = ..., channel: _Optional[str] = ..., method_id: _Optional[str] = ..., amount_fen: _Optional[int] = ..., state: _Optional[_Union[PayoutState, str]] = ..., failure_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PayoutRequest(_message.Message):
    __slots__ = ("order_id", "uid", "channel", "method_id", "amount_fen")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int
    def __init__(self, order_id: _Optional[str] = ..., uid: _Optional[int] = ..., channel: _Optional[str] = ..., method_id: _Optional[str] = ..., amount_fen: _Optional[int] = ...) -> None: ...

class PayoutResponse(_message.Message):
    __slots__ = ("payout", "replayed")
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    payout: Payout
    replayed: bool
    def __init__(self, payout: _Optional[_Union[Payout, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class PayoutBatchRequest(_message.Message):
    __slots__ = ("payouts",)
    PAYOUTS_FIELD_NUMBER: _ClassVar[int]
    payouts: _containers.RepeatedCompositeFieldContainer[PayoutRequest]
    def __init__(self, payouts: _Optional[_Iterable[_Union[PayoutRequest, _Mapping]]] = ...) -> None: ...

class PayoutError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    message: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PayoutBatchResult(_message.Message):
    __slots__ = ("paid", "error")
    PAID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    paid: PayoutResponse
    error: PayoutError
    def __init__(self, paid: _Optional[_Union[PayoutResponse, _Mapping]] = ..., error: _Optional[_Union[PayoutError, _Mapping]] = ...) -> None: ...

class PayoutBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PayoutBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PayoutBatchResult, _Mapping]]] = ...) -> None: ...

class QueryPayoutRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class QueryPayoutResponse(_message.Message):
    __slots__ = ("payout",)
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    payout: Payout
    def __init__(self, payout: _Optional[_Union[Payout, _Mapping]] = ...) -> None: ...

class QueryPayoutsRequest(_message.Message):
    __slots__ = ("order_ids",)
    ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    order_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, order_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryPayoutsResponse(_message.Message):
    __slots__ = ("payouts", "missing_order_ids")
    PAYOUTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    payouts: _containers.RepeatedCompositeFieldContainer[Payout]
    missing_order_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payouts: _Optional[_Iterable[_Union[Payout, _Mapping]]] = ..., missing_order_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPayoutsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "page_size", "page_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPayoutsResponse(_message.Message):
    __slots__ = ("payouts", "next_page_token")
    PAYOUTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payouts: _containers.RepeatedCompositeFieldContainer[Payout]
    next_page_token: str
    def __init__(self, payouts: _Optional[_Iterable[_Union[Payout, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PayoutMethod(_message.Message):
    __slots__ = ("method_id", "uid", "channel", "display")
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    method_id: str
    uid: int
    channel: str
    display: str
    def __init__(self, method_id: _Optional[str] = ..., uid: _Optional[int] = ..., channel: _Optional[str] = ..., display: _Optional[str] = ...) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = ("uid", "page_size", "page_token")
    UID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    uid: int
    page_size: int
    page_token: str
    def __init__(self, uid: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ("methods", "next_page_token")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[PayoutMethod]
    next_page_token: str
    def __init__(self, methods: _Optional[_Iterable[_Union[PayoutMethod, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BindMethodRequest(_message.Message):
    __slots__ = ("uid", "channel", "account", "method_id")
    UID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    uid: int
    channel: str
    account: str
    method_id: str
    def __init__(self, uid: _Optional[int] = ..., channel: _Optional[str] = ..., account: _Optional[str] = ..., method_id: _Optional[str] = ...) -> None: ...

class BindMethodResponse(_message.Message):
    __slots__ = ("method",)
    METHOD_FIELD_NUMBER: _ClassVar[int]
    method: PayoutMethod
    def __init__(self, method: _Optional[_Union[PayoutMethod, _Mapping]] = ...) -> None: ...

class ChannelFaults(_message.Message):
    __slots__ = ("channel", "capacity_per_second", "latency_min_ms", "latency_max_ms", "transient_error_rate", "definitive_failure_rate", "async_rate", "async_delay_ms", "lost_reply_rate", "async_failure_rate")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MIN_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSIENT_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    DEFINITIVE_FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    ASYNC_RATE_FIELD_NUMBER: _ClassVar[int]
    ASYNC_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    LOST_REPLY_RATE_FIELD_NUMBER: _ClassVar[int]
    ASYNC_FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    channel: str
    capacity_per_second: int
    latency_min_ms: int
    latency_max_ms: int
    transient_error_rate: float
    definitive_failure_rate: float
    async_rate: float
    async_delay_ms: int
    lost_reply_rate: float
    async_failure_rate: float
    def __init__(self, channel: _Optional[str] = ..., capacity_per_second: _Optional[int] = ..., latency_min_ms: _Optional[int] = ..., latency_max_ms: _Optional[int] = ..., transient_error_rate: _Optional[float] = ..., definitive_failure_rate: _Optional[float] = ..., async_rate: _Optional[float] = ..., async_delay_ms: _Optional[int] = ..., lost_reply_rate: _Optional[float] = ..., async_failure_rate: _Optional[float] = ...) -> None: ...

class SetChannelFaultsRequest(_message.Message):
    __slots__ = ("faults",)
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    faults: ChannelFaults
    def __init__(self, faults: _Optional[_Union[ChannelFaults, _Mapping]] = ...) -> None: ...

class SetChannelFaultsResponse(_message.Message):
    __slots__ = ("faults",)
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    faults: ChannelFaults
    def __init__(self, faults: _Optional[_Union[ChannelFaults, _Mapping]] = ...) -> None: ...

class GetChannelFaultsRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...

class GetChannelFaultsResponse(_message.Message):
    __slots__ = ("faults",)
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    faults: ChannelFaults
    def __init__(self, faults: _Optional[_Union[ChannelFaults, _Mapping]] = ...) -> None: ...

class ListAdminAuditRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAdminAuditResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_admin_pb2.AdminAuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_admin_pb2.AdminAuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
