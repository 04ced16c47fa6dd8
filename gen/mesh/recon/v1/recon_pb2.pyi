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

class DiscrepancyStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCREPANCY_STATUS_UNSPECIFIED: _ClassVar[DiscrepancyStatus]
    DISCREPANCY_STATUS_OPEN: _ClassVar[DiscrepancyStatus]
    DISCREPANCY_STATUS_RESOLVED: _ClassVar[DiscrepancyStatus]
    DISCREPANCY_STATUS_ACCEPTED: _ClassVar[DiscrepancyStatus]

class DiscrepancyReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCREPANCY_REASON_UNSPECIFIED: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_MISSING_DEBIT: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_DOUBLE_DEBIT: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_DEBIT_WITHOUT_ORDER: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_MISSING_REFUND: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_DOUBLE_REFUND: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_REFUND_ON_SUCCEEDED: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_PAYOUT_WITHOUT_DEBIT: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_DOUBLE_PAYOUT: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_AMOUNT_MISMATCH: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_STATE_MISMATCH: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_STUCK_ORDER: _ClassVar[DiscrepancyReason]
    DISCREPANCY_REASON_CONSERVATION: _ClassVar[DiscrepancyReason]

class DiscrepancySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCREPANCY_SOURCE_UNSPECIFIED: _ClassVar[DiscrepancySource]
    DISCREPANCY_SOURCE_REALTIME: _ClassVar[DiscrepancySource]
    DISCREPANCY_SOURCE_SELF_CHECK: _ClassVar[DiscrepancySource]
    DISCREPANCY_SOURCE_DAILY: _ClassVar[DiscrepancySource]
DISCREPANCY_STATUS_UNSPECIFIED: DiscrepancyStatus
DISCREPANCY_STATUS_OPEN: DiscrepancyStatus
DISCREPANCY_STATUS_RESOLVED: DiscrepancyStatus
DISCREPANCY_STATUS_ACCEPTED: DiscrepancyStatus
DISCREPANCY_REASON_UNSPECIFIED: DiscrepancyReason
DISCREPANCY_REASON_MISSING_DEBIT: DiscrepancyReason
DISCREPANCY_REASON_DOUBLE_DEBIT: DiscrepancyReason
DISCREPANCY_REASON_DEBIT_WITHOUT_ORDER: DiscrepancyReason
DISCREPANCY_REASON_MISSING_REFUND: DiscrepancyReason
DISCREPANCY_REASON_DOUBLE_REFUND: DiscrepancyReason
DISCREPANCY_REASON_REFUND_ON_SUCCEEDED: DiscrepancyReason
DISCREPANCY_REASON_PAYOUT_WITHOUT_DEBIT: DiscrepancyReason
DISCREPANCY_REASON_DOUBLE_PAYOUT: DiscrepancyReason
DISCREPANCY_REASON_AMOUNT_MISMATCH: DiscrepancyReason
DISCREPANCY_REASON_STATE_MISMATCH: DiscrepancyReason
DISCREPANCY_REASON_STUCK_ORDER: DiscrepancyReason
DISCREPANCY_REASON_CONSERVATION: DiscrepancyReason
DISCREPANCY_SOURCE_UNSPECIFIED: DiscrepancySource
DISCREPANCY_SOURCE_REALTIME: DiscrepancySource
DISCREPANCY_SOURCE_SELF_CHECK: DiscrepancySource
DISCREPANCY_SOURCE_DAILY: DiscrepancySource

class Discrepancy(_message.Message):
    __slots__ = ("discrepancy_id", "reason", "order_id", "detail", "status", "source", "create_time", "note", "uid", "subject", "update_time", "reason_kind", "source_kind")
    DISCREPANCY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KIND_FIELD_NUMBER: _ClassVar[int]
    discrepancy_id: int
    reason: str
    order_id: str
    detail: str
    status: DiscrepancyStatus
    source: str
    create_time: _timestamp_pb2.Timestamp
    note: str
    uid: int
    subject: str
    update_time: _timestamp_pb2.Timestamp
    reason_kind: DiscrepancyReason
    source_kind: DiscrepancySource
    def __init__(self, discrepancy_id: _Optional[int] = ..., reason: _Optional[str] = ..., order_id: _Optional[str] = ..., detail: _Optional[str] = ..., status: _Optional[_Union[DiscrepancyStatus, str]] = ..., source: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ..., uid: _Optional[int] = ..., subject: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason_kind: _Optional[_Union[DiscrepancyReason, str]] = ..., source_kind: _Optional[_Union[DiscrepancySource, str]] = ...) -> None: ...

class ListDiscrepanciesRequest(_message.Message):
    __slots__ = ("status", "reason", "order_id", "page_size", "source", "reason_kind", "source_kind", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: DiscrepancyStatus
    reason: str
    order_id: str
    page_size: int
    source: str
    reason_kind: DiscrepancyReason
    source_kind: DiscrepancySource
    page_token: str
    def __init__(self, status: _Optional[_Union[DiscrepancyStatus, str]] = ..., reason: _Optional[str] = ..., order_id: _Optional[str] = ..., page_size: _Optional[int] = ..., source: _Optional[str] = ..., reason_kind: _Optional[_Union[DiscrepancyReason, str]] = ..., source_kind: _Optional[_Union[DiscrepancySource, str]] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDiscrepanciesResponse(_message.Message):
    __slots__ = ("discrepancies", "next_page_token")
    DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    discrepancies: _containers.RepeatedCompositeFieldContainer[Discrepancy]
    next_page_token: str
    def __init__(self, discrepancies: _Optional[_Iterable[_Union[Discrepancy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ResolveDiscrepancyRequest(_message.Message):
    __slots__ = ("discrepancy_id", "status", "note")
    DISCREPANCY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    discrepancy_id: int
    status: DiscrepancyStatus
    note: str
    def __init__(self, discrepancy_id: _Optional[int] = ..., status: _Optional[_Union[DiscrepancyStatus, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ResolveDiscrepancyResponse(_message.Message):
    __slots__ = ("discrepancy",)
    DISCREPANCY_FIELD_NUMBER: _ClassVar[int]
    discrepancy: Discrepancy
    def __init__(self, discrepancy: _Optional[_Union[Discrepancy, _Mapping]] = ...) -> None: ...

class CheckOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class CheckOrderResponse(_message.Message):
    __slots__ = ("discrepancies",)
    DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    discrepancies: _containers.RepeatedCompositeFieldContainer[Discrepancy]
    def __init__(self, discrepancies: _Optional[_Iterable[_Union[Discrepancy, _Mapping]]] = ...) -> None: ...

class GetReconStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeedPosition(_message.Message):
    __slots__ = ("feed", "cursor", "update_time", "applied", "head_time")
    FEED_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    HEAD_TIME_FIELD_NUMBER: _ClassVar[int]
    feed: str
    cursor: str
    update_time: _timestamp_pb2.Timestamp
    applied: int
    head_time: _timestamp_pb2.Timestamp
    def __init__(self, feed: _Optional[str] = ..., cursor: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., applied: _Optional[int] = ..., head_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetReconStatusResponse(_message.Message):
    __slots__ = ("positions", "pending_checks", "checked_orders", "open_discrepancies", "credits_fen", "debits_fen", "refunds_fen", "balances_fen", "gateway_succeeded_fen", "orders_succeeded_fen")
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    PENDING_CHECKS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_ORDERS_FIELD_NUMBER: _ClassVar[int]
    OPEN_DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FEN_FIELD_NUMBER: _ClassVar[int]
    DEBITS_FEN_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_FEN_FIELD_NUMBER: _ClassVar[int]
    BALANCES_FEN_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_SUCCEEDED_FEN_FIELD_NUMBER: _ClassVar[int]
    ORDERS_SUCCEEDED_FEN_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedCompositeFieldContainer[FeedPosition]
    pending_checks: int
    checked_orders: int
    open_discrepancies: int
    credits_fen: int
    debits_fen: int
    refunds_fen: int
    balances_fen: int
    gateway_succeeded_fen: int
    orders_succeeded_fen: int
    def __init__(self, positions: _Optional[_Iterable[_Union[FeedPosition, _Mapping]]] = ..., pending_checks: _Optional[int] = ..., checked_orders: _Optional[int] = ..., open_discrepancies: _Optional[int] = ..., credits_fen: _Optional[int] = ..., debits_fen: _Optional[int] = ..., refunds_fen: _Optional[int] = ..., balances_fen: _Optional[int] = ..., gateway_succeeded_fen: _Optional[int] = ..., orders_succeeded_fen: _Optional[int] = ...) -> None: ...

class RunDailyReconRequest(_message.Message):
    __slots__ = ("date",)
    DATE_FIELD_NUMBER: _ClassVar[int]
    date: str
    def __init__(self, date: _Optional[str] = ...) -> None: ...

class DailyReport(_message.Message):
    __slots__ = ("date", "orders", "report_json", "report_text", "discrepancies", "create_time")
    DATE_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    REPORT_TEXT_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    date: str
    orders: int
    report_json: str
    report_text: str
    discrepancies: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, date: _Optional[str] = ..., orders: _Optional[int] = ..., report_json: _Optional[str] = ..., report_text: _Optional[str] = ..., discrepancies: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RunDailyReconResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: DailyReport
    def __init__(self, report: _Optional[_Union[DailyReport, _Mapping]] = ...) -> None: ...

class GetDailyReportRequest(_message.Message):
    __slots__ = ("date",)
    DATE_FIELD_NUMBER: _ClassVar[int]
    date: str
    def __init__(self, date: _Optional[str] = ...) -> None: ...

class GetDailyReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: DailyReport
    def __init__(self, report: _Optional[_Union[DailyReport, _Mapping]] = ...) -> None: ...

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
