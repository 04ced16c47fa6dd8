import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.admin.v1 import admin_pb2 as _admin_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayoutJob(_message.Message):
    __slots__ = ("order_id", "uid", "channel", "method_id", "amount_fen", "attempt", "enqueue_time", "last_error")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    uid: int
    channel: str
    method_id: str
    amount_fen: int
    attempt: int
    enqueue_time: _timestamp_pb2.Timestamp
    last_error: str
    def __init__(self, order_id: _Optional[str] = ..., uid: _Optional[int] = ..., channel: _Optional[str] = ..., method_id: _Optional[str] = ..., amount_fen: _Optional[int] = ..., attempt: _Optional[int] = ..., enqueue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ...) -> None: ...

class ChannelStats(_message.Message):
    __slots__ = ("channel", "backlog", "pending", "consumers", "rate_limit_per_second", "current_rate_per_second", "dead_letters", "unlimited", "paused")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    channel: str
    backlog: int
    pending: int
    consumers: int
    rate_limit_per_second: float
    current_rate_per_second: float
    dead_letters: int
    unlimited: bool
    paused: bool
    def __init__(self, channel: _Optional[str] = ..., backlog: _Optional[int] = ..., pending: _Optional[int] = ..., consumers: _Optional[int] = ..., rate_limit_per_second: _Optional[float] = ..., current_rate_per_second: _Optional[float] = ..., dead_letters: _Optional[int] = ..., unlimited: _Optional[bool] = ..., paused: _Optional[bool] = ...) -> None: ...

class GetChannelStatsRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...

class GetChannelStatsResponse(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[ChannelStats]
    def __init__(self, channels: _Optional[_Iterable[_Union[ChannelStats, _Mapping]]] = ...) -> None: ...

class SetChannelRateRequest(_message.Message):
    __slots__ = ("channel", "rate_per_second", "unlimited")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    RATE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    channel: str
    rate_per_second: float
    unlimited: bool
    def __init__(self, channel: _Optional[str] = ..., rate_per_second: _Optional[float] = ..., unlimited: _Optional[bool] = ...) -> None: ...

class SetChannelRateResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: ChannelStats
    def __init__(self, stats: _Optional[_Union[ChannelStats, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("dead_letter_id", "job", "reason", "attempts", "dead_time")
    DEAD_LETTER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEAD_TIME_FIELD_NUMBER: _ClassVar[int]
    dead_letter_id: str
    job: PayoutJob
    reason: str
    attempts: int
    dead_time: _timestamp_pb2.Timestamp
    def __init__(self, dead_letter_id: _Optional[str] = ..., job: _Optional[_Union[PayoutJob, _Mapping]] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ..., dead_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("channel", "page_size", "page_token")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    channel: str
    page_size: int
    page_token: str
    def __init__(self, channel: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "next_page_token")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReplayDeadLettersRequest(_message.Message):
    __slots__ = ("channel", "dead_letter_ids")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_IDS_FIELD_NUMBER: _ClassVar[int]
    channel: str
    dead_letter_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, channel: _Optional[str] = ..., dead_letter_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplayDeadLettersResponse(_message.Message):
    __slots__ = ("replayed",)
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    replayed: int
    def __init__(self, replayed: _Optional[int] = ...) -> None: ...

class RateChange(_message.Message):
    __slots__ = ("review", "request")
    REVIEW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    review: _admin_pb2.ChangeReview
    request: SetChannelRateRequest
    def __init__(self, review: _Optional[_Union[_admin_pb2.ChangeReview, _Mapping]] = ..., request: _Optional[_Union[SetChannelRateRequest, _Mapping]] = ...) -> None: ...

class ProposeRateChangeRequest(_message.Message):
    __slots__ = ("request", "reason")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request: SetChannelRateRequest
    reason: str
    def __init__(self, request: _Optional[_Union[SetChannelRateRequest, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ProposeRateChangeResponse(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: RateChange
    def __init__(self, change: _Optional[_Union[RateChange, _Mapping]] = ...) -> None: ...

class ApproveRateChangeRequest(_message.Message):
    __slots__ = ("change_id",)
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    def __init__(self, change_id: _Optional[str] = ...) -> None: ...

class ApproveRateChangeResponse(_message.Message):
    __slots__ = ("change", "stats")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    change: RateChange
    stats: ChannelStats
    def __init__(self, change: _Optional[_Union[RateChange, _Mapping]] = ..., stats: _Optional[_Union[ChannelStats, _Mapping]] = ...) -> None: ...

class RejectRateChangeRequest(_message.Message):
    __slots__ = ("change_id", "reason")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    reason: str
    def __init__(self, change_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectRateChangeResponse(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: RateChange
    def __init__(self, change: _Optional[_Union[RateChange, _Mapping]] = ...) -> None: ...

class ListRateChangesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRateChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[RateChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[RateChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

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
