import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_CREDIT: _ClassVar[EntryKind]
    ENTRY_KIND_DEBIT: _ClassVar[EntryKind]
    ENTRY_KIND_REFUND: _ClassVar[EntryKind]
    ENTRY_KIND_VOID: _ClassVar[EntryKind]

class CreditOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CREDIT_OUTCOME_UNSPECIFIED: _ClassVar[CreditOutcome]
    CREDIT_OUTCOME_CREDITED: _ClassVar[CreditOutcome]
    CREDIT_OUTCOME_ALREADY_CREDITED: _ClassVar[CreditOutcome]

class RefundOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_OUTCOME_UNSPECIFIED: _ClassVar[RefundOutcome]
    REFUND_OUTCOME_REFUNDED: _ClassVar[RefundOutcome]
    REFUND_OUTCOME_VOIDED: _ClassVar[RefundOutcome]
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_CREDIT: EntryKind
ENTRY_KIND_DEBIT: EntryKind
ENTRY_KIND_REFUND: EntryKind
ENTRY_KIND_VOID: EntryKind
CREDIT_OUTCOME_UNSPECIFIED: CreditOutcome
CREDIT_OUTCOME_CREDITED: CreditOutcome
CREDIT_OUTCOME_ALREADY_CREDITED: CreditOutcome
REFUND_OUTCOME_UNSPECIFIED: RefundOutcome
REFUND_OUTCOME_REFUNDED: RefundOutcome
REFUND_OUTCOME_VOIDED: RefundOutcome

class Entry(_message.Message):
    __slots__ = ("entry_id", "uid", "kind", "amount_fen", "reward_id", "order_id", "balance_after_fen", "create_time", "source")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    REWARD_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FEN_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    entry_id: int
    uid: int
    kind: EntryKind
    amount_fen: int
    reward_id: str
    order_id: str
    balance_after_fen: int
    create_time: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, entry_id: _Optional[int] = ..., uid: _Optional[int] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., amount_fen: _Optional[int] = ..., reward_id: _Optional[str] = ..., order_id: _Optional[str] = ..., balance_after_fen: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class ForceCreditRequest(_message.Message):
    __slots__ = ("uid", "tokens")
    UID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    uid: int
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uid: _Optional[int] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class CreditResult(_message.Message):
    __slots__ = ("reward_id", "outcome", "amount_fen")
    REWARD_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    reward_id: str
    outcome: CreditOutcome
    amount_fen: int
    def __init__(self, reward_id: _Optional[str] = ..., outcome: _Optional[_Union[CreditOutcome, str]] = ..., amount_fen: _Optional[int] = ...) -> None: ...

class ForceCreditResponse(_message.Message):
    __slots__ = ("results", "balance_fen")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CreditResult]
    balance_fen: int
    def __init__(self, results: _Optional[_Iterable[_Union[CreditResult, _Mapping]]] = ..., balance_fen: _Optional[int] = ...) -> None: ...

class DeductRequest(_message.Message):
    __slots__ = ("order_id", "uid", "amount_fen")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    uid: int
    amount_fen: int
    def __init__(self, order_id: _Optional[str] = ..., uid: _Optional[int] = ..., amount_fen: _Optional[int] = ...) -> None: ...

class DeductResponse(_message.Message):
    __slots__ = ("entry", "replayed")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    replayed: bool
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class DeductBatchRequest(_message.Message):
    __slots__ = ("deducts",)
    DEDUCTS_FIELD_NUMBER: _ClassVar[int]
    deducts: _containers.RepeatedCompositeFieldContainer[DeductRequest]
    def __init__(self, deducts: _Optional[_Iterable[_Union[DeductRequest, _Mapping]]] = ...) -> None: ...

class DeductError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    message: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class DeductResult(_message.Message):
    __slots__ = ("deducted", "error")
    DEDUCTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    deducted: DeductResponse
    error: DeductError
    def __init__(self, deducted: _Optional[_Union[DeductResponse, _Mapping]] = ..., error: _Optional[_Union[DeductError, _Mapping]] = ...) -> None: ...

class DeductBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DeductResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DeductResult, _Mapping]]] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class RefundResponse(_message.Message):
    __slots__ = ("outcome", "entry", "replayed")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    outcome: RefundOutcome
    entry: Entry
    replayed: bool
    def __init__(self, outcome: _Optional[_Union[RefundOutcome, str]] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: int
    def __init__(self, uid: _Optional[int] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("uid", "balance_fen")
    UID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FEN_FIELD_NUMBER: _ClassVar[int]
    uid: int
    balance_fen: int
    def __init__(self, uid: _Optional[int] = ..., balance_fen: _Optional[int] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("uid", "page_size", "page_token")
    UID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    uid: int
    page_size: int
    page_token: str
    def __init__(self, uid: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetOrderEntriesRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderEntriesResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ...) -> None: ...

class GetOrderEntriesBatchRequest(_message.Message):
    __slots__ = ("order_ids",)
    ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    order_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, order_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class OrderEntries(_message.Message):
    __slots__ = ("order_id", "entries")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    def __init__(self, order_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ...) -> None: ...

class GetOrderEntriesBatchResponse(_message.Message):
    __slots__ = ("orders",)
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[OrderEntries]
    def __init__(self, orders: _Optional[_Iterable[_Union[OrderEntries, _Mapping]]] = ...) -> None: ...
