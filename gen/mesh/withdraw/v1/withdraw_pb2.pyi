import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from mesh.admin.v1 import admin_pb2 as _admin_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATE_UNSPECIFIED: _ClassVar[OrderState]
    ORDER_STATE_PENDING_DEDUCT: _ClassVar[OrderState]
    ORDER_STATE_PENDING_PAYOUT: _ClassVar[OrderState]
    ORDER_STATE_PAYING: _ClassVar[OrderState]
    ORDER_STATE_SUCCEEDED: _ClassVar[OrderState]
    ORDER_STATE_FAILED: _ClassVar[OrderState]

class RefundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_STATE_UNSPECIFIED: _ClassVar[RefundState]
    REFUND_STATE_PENDING: _ClassVar[RefundState]
    REFUND_STATE_REFUNDED: _ClassVar[RefundState]
    REFUND_STATE_VOIDED: _ClassVar[RefundState]

class PayoutResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYOUT_RESULT_UNSPECIFIED: _ClassVar[PayoutResult]
    PAYOUT_RESULT_SUCCEEDED: _ClassVar[PayoutResult]
    PAYOUT_RESULT_FAILED: _ClassVar[PayoutResult]
ORDER_STATE_UNSPECIFIED: OrderState
ORDER_STATE_PENDING_DEDUCT: OrderState
ORDER_STATE_PENDING_PAYOUT: OrderState
ORDER_STATE_PAYING: OrderState
ORDER_STATE_SUCCEEDED: OrderState
ORDER_STATE_FAILED: OrderState
REFUND_STATE_UNSPECIFIED: RefundState
REFUND_STATE_PENDING: RefundState
REFUND_STATE_REFUNDED: RefundState
REFUND_STATE_VOIDED: RefundState
PAYOUT_RESULT_UNSPECIFIED: PayoutResult
PAYOUT_RESULT_SUCCEEDED: PayoutResult
PAYOUT_RESULT_FAILED: PayoutResult

class StateChange(_message.Message):
    __slots__ = ("from_state", "to_state", "reason", "change_time")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    from_state: OrderState
    to_state: OrderState
    reason: str
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, from_state: _Optional[_Union[OrderState, str]] = ..., to_state: _Optional[_Union[OrderState, str]] = ..., reason: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("order_id", "uid", "request_id", "amount_fen", "channel", "method_id", "state", "failure_reason", "create_time", "update_time", "history", "refund_state", "refund")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    REFUND_STATE_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    uid: int
    request_id: str
    amount_fen: int
    channel: str
    method_id: str
    state: OrderState
    failure_reason: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    history: _containers.RepeatedCompositeFieldContainer[StateChange]
    refund_state: str
    refund: RefundState
    def __init__(self, order_id: _Optional[str] = ..., uid: _Optional[int] = ..., request_id: _Optional[str] = ..., amount_fen: _Optional[int] = ..., channel: _Optional[str] = ..., method_id: _Optional[str] = ..., state: _Optional[_Union[OrderState, str]] = ..., failure_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., history: _Optional[_Iterable[_Union[StateChange, _Mapping]]] = ..., refund_state: _Optional[str] = ..., refund: _Optional[_Union[RefundState, str]] = ...) -> None: ...

class PayoutMethod(_message.Message):
    __slots__ = ("method_id", "channel", "display")
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    method_id: str
    channel: str
    display: str
    def __init__(self, method_id: _Optional[str] = ..., channel: _Optional[str] = ..., display: _Optional[str] = ...) -> None: ...

class Gate(_message.Message):
    __slots__ = ("open", "open_time", "message")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    OPEN_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    open: bool
    open_time: _timestamp_pb2.Timestamp
    message: str
    def __init__(self, open: _Optional[bool] = ..., open_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class GetWithdrawPageRequest(_message.Message):
    __slots__ = ("uid", "tokens")
    UID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    uid: int
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uid: _Optional[int] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class GetWithdrawPageResponse(_message.Message):
    __slots__ = ("balance_fen", "balance_stale", "min_amount_fen", "max_amount_fen", "gate", "methods", "recent_orders", "methods_stale")
    BALANCE_FEN_FIELD_NUMBER: _ClassVar[int]
    BALANCE_STALE_FIELD_NUMBER: _ClassVar[int]
    MIN_AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    MAX_AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ORDERS_FIELD_NUMBER: _ClassVar[int]
    METHODS_STALE_FIELD_NUMBER: _ClassVar[int]
    balance_fen: int
    balance_stale: bool
    min_amount_fen: int
    max_amount_fen: int
    gate: Gate
    methods: _containers.RepeatedCompositeFieldContainer[PayoutMethod]
    recent_orders: _containers.RepeatedCompositeFieldContainer[Order]
    methods_stale: bool
    def __init__(self, balance_fen: _Optional[int] = ..., balance_stale: _Optional[bool] = ..., min_amount_fen: _Optional[int] = ..., max_amount_fen: _Optional[int] = ..., gate: _Optional[_Union[Gate, _Mapping]] = ..., methods: _Optional[_Iterable[_Union[PayoutMethod, _Mapping]]] = ..., recent_orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., methods_stale: _Optional[bool] = ...) -> None: ...

class ConfirmWithdrawRequest(_message.Message):
    __slots__ = ("uid", "request_id", "amount_fen", "method_id", "tokens")
    UID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FEN_FIELD_NUMBER: _ClassVar[int]
    METHOD_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    uid: int
    request_id: str
    amount_fen: int
    method_id: str
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uid: _Optional[int] = ..., request_id: _Optional[str] = ..., amount_fen: _Optional[int] = ..., method_id: _Optional[str] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class ConfirmWithdrawResponse(_message.Message):
    __slots__ = ("order", "replayed")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    order: Order
    replayed: bool
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("uid", "page_size", "page_token")
    UID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    uid: int
    page_size: int
    page_token: str
    def __init__(self, uid: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BeginPayoutRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class BeginPayoutResponse(_message.Message):
    __slots__ = ("order", "acquired")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    order: Order
    acquired: bool
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., acquired: _Optional[bool] = ...) -> None: ...

class SettlePayoutRequest(_message.Message):
    __slots__ = ("order_id", "result", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    result: PayoutResult
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., result: _Optional[_Union[PayoutResult, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class SettlePayoutResponse(_message.Message):
    __slots__ = ("order", "replayed")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    order: Order
    replayed: bool
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class PayoutItemError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    message: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetOrderStatesRequest(_message.Message):
    __slots__ = ("order_ids",)
    ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    order_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, order_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetOrderStatesResponse(_message.Message):
    __slots__ = ("states",)
    class StatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OrderState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OrderState, str]] = ...) -> None: ...
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.ScalarMap[str, OrderState]
    def __init__(self, states: _Optional[_Mapping[str, OrderState]] = ...) -> None: ...

class BeginPayoutBatchRequest(_message.Message):
    __slots__ = ("order_ids",)
    ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    order_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, order_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BeginPayoutResult(_message.Message):
    __slots__ = ("begun", "error")
    BEGUN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    begun: BeginPayoutResponse
    error: PayoutItemError
    def __init__(self, begun: _Optional[_Union[BeginPayoutResponse, _Mapping]] = ..., error: _Optional[_Union[PayoutItemError, _Mapping]] = ...) -> None: ...

class BeginPayoutBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BeginPayoutResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BeginPayoutResult, _Mapping]]] = ...) -> None: ...

class SettlePayoutBatchRequest(_message.Message):
    __slots__ = ("settles",)
    SETTLES_FIELD_NUMBER: _ClassVar[int]
    settles: _containers.RepeatedCompositeFieldContainer[SettlePayoutRequest]
    def __init__(self, settles: _Optional[_Iterable[_Union[SettlePayoutRequest, _Mapping]]] = ...) -> None: ...

class SettlePayoutResult(_message.Message):
    __slots__ = ("settled", "error")
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    settled: SettlePayoutResponse
    error: PayoutItemError
    def __init__(self, settled: _Optional[_Union[SettlePayoutResponse, _Mapping]] = ..., error: _Optional[_Union[PayoutItemError, _Mapping]] = ...) -> None: ...

class SettlePayoutBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SettlePayoutResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SettlePayoutResult, _Mapping]]] = ...) -> None: ...

class GateConfig(_message.Message):
    __slots__ = ("timezone", "closed_start", "closed_end", "release_modulus", "release_k", "version", "bind_prompt", "auto_release", "auto_release_drain_seconds", "auto_release_step")
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_START_FIELD_NUMBER: _ClassVar[int]
    CLOSED_END_FIELD_NUMBER: _ClassVar[int]
    RELEASE_MODULUS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_K_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BIND_PROMPT_FIELD_NUMBER: _ClassVar[int]
    AUTO_RELEASE_FIELD_NUMBER: _ClassVar[int]
    AUTO_RELEASE_DRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AUTO_RELEASE_STEP_FIELD_NUMBER: _ClassVar[int]
    timezone: str
    closed_start: str
    closed_end: str
    release_modulus: int
    release_k: int
    version: int
    bind_prompt: str
    auto_release: bool
    auto_release_drain_seconds: int
    auto_release_step: int
    def __init__(self, timezone: _Optional[str] = ..., closed_start: _Optional[str] = ..., closed_end: _Optional[str] = ..., release_modulus: _Optional[int] = ..., release_k: _Optional[int] = ..., version: _Optional[int] = ..., bind_prompt: _Optional[str] = ..., auto_release: _Optional[bool] = ..., auto_release_drain_seconds: _Optional[int] = ..., auto_release_step: _Optional[int] = ...) -> None: ...

class GetGateRequest(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: int
    def __init__(self, uid: _Optional[int] = ...) -> None: ...

class GetGateResponse(_message.Message):
    __slots__ = ("config", "gate")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    config: GateConfig
    gate: Gate
    def __init__(self, config: _Optional[_Union[GateConfig, _Mapping]] = ..., gate: _Optional[_Union[Gate, _Mapping]] = ...) -> None: ...

class SetGateRequest(_message.Message):
    __slots__ = ("config", "expected_version", "reason", "update_mask")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    config: GateConfig
    expected_version: int
    reason: str
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, config: _Optional[_Union[GateConfig, _Mapping]] = ..., expected_version: _Optional[int] = ..., reason: _Optional[str] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class SetGateResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: GateConfig
    def __init__(self, config: _Optional[_Union[GateConfig, _Mapping]] = ...) -> None: ...

class GateAuditEntry(_message.Message):
    __slots__ = ("actor", "change_time", "old_config", "new_config", "reason")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    OLD_CONFIG_FIELD_NUMBER: _ClassVar[int]
    NEW_CONFIG_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    actor: str
    change_time: _timestamp_pb2.Timestamp
    old_config: GateConfig
    new_config: GateConfig
    reason: str
    def __init__(self, actor: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., old_config: _Optional[_Union[GateConfig, _Mapping]] = ..., new_config: _Optional[_Union[GateConfig, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ListGateAuditRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGateAuditResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[GateAuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[GateAuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RunCompensationRequest(_message.Message):
    __slots__ = ("dry_run", "min_age_seconds", "override_min_age")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    MIN_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_MIN_AGE_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    min_age_seconds: int
    override_min_age: bool
    def __init__(self, dry_run: _Optional[bool] = ..., min_age_seconds: _Optional[int] = ..., override_min_age: _Optional[bool] = ...) -> None: ...

class CompensationAction(_message.Message):
    __slots__ = ("order_id", "from_state", "action", "detail")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    from_state: OrderState
    action: str
    detail: str
    def __init__(self, order_id: _Optional[str] = ..., from_state: _Optional[_Union[OrderState, str]] = ..., action: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RunCompensationResponse(_message.Message):
    __slots__ = ("actions", "ran")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    RAN_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[CompensationAction]
    ran: bool
    def __init__(self, actions: _Optional[_Iterable[_Union[CompensationAction, _Mapping]]] = ..., ran: _Optional[bool] = ...) -> None: ...

class GetStuckOrdersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StuckBand(_message.Message):
    __slots__ = ("state", "older_than_seconds", "count")
    STATE_FIELD_NUMBER: _ClassVar[int]
    OLDER_THAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    state: OrderState
    older_than_seconds: int
    count: int
    def __init__(self, state: _Optional[_Union[OrderState, str]] = ..., older_than_seconds: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class GetStuckOrdersResponse(_message.Message):
    __slots__ = ("bands",)
    BANDS_FIELD_NUMBER: _ClassVar[int]
    bands: _containers.RepeatedCompositeFieldContainer[StuckBand]
    def __init__(self, bands: _Optional[_Iterable[_Union[StuckBand, _Mapping]]] = ...) -> None: ...

class GateChange(_message.Message):
    __slots__ = ("review", "request")
    REVIEW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    review: _admin_pb2.ChangeReview
    request: SetGateRequest
    def __init__(self, review: _Optional[_Union[_admin_pb2.ChangeReview, _Mapping]] = ..., request: _Optional[_Union[SetGateRequest, _Mapping]] = ...) -> None: ...

class ProposeGateChangeRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: SetGateRequest
    def __init__(self, request: _Optional[_Union[SetGateRequest, _Mapping]] = ...) -> None: ...

class ProposeGateChangeResponse(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: GateChange
    def __init__(self, change: _Optional[_Union[GateChange, _Mapping]] = ...) -> None: ...

class ApproveGateChangeRequest(_message.Message):
    __slots__ = ("change_id",)
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    def __init__(self, change_id: _Optional[str] = ...) -> None: ...

class ApproveGateChangeResponse(_message.Message):
    __slots__ = ("change", "config")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    change: GateChange
    config: GateConfig
    def __init__(self, change: _Optional[_Union[GateChange, _Mapping]] = ..., config: _Optional[_Union[GateConfig, _Mapping]] = ...) -> None: ...

class RejectGateChangeRequest(_message.Message):
    __slots__ = ("change_id", "reason")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    reason: str
    def __init__(self, change_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectGateChangeResponse(_message.Message):
    __slots__ = ("change",)
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    change: GateChange
    def __init__(self, change: _Optional[_Union[GateChange, _Mapping]] = ...) -> None: ...

class ListGateChangesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListGateChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[GateChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[GateChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

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
