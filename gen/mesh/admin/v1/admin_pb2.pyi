import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_STATE_UNSPECIFIED: _ClassVar[ChangeState]
    CHANGE_STATE_PROPOSED: _ClassVar[ChangeState]
    CHANGE_STATE_APPLIED: _ClassVar[ChangeState]
    CHANGE_STATE_REJECTED: _ClassVar[ChangeState]
    CHANGE_STATE_EXPIRED: _ClassVar[ChangeState]

class AdminAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADMIN_ACTION_UNSPECIFIED: _ClassVar[AdminAction]
    ADMIN_ACTION_GATE_SET: _ClassVar[AdminAction]
    ADMIN_ACTION_GATE_PROPOSE: _ClassVar[AdminAction]
    ADMIN_ACTION_GATE_APPROVE: _ClassVar[AdminAction]
    ADMIN_ACTION_GATE_REJECT: _ClassVar[AdminAction]
    ADMIN_ACTION_RATE_SET: _ClassVar[AdminAction]
    ADMIN_ACTION_RATE_PROPOSE: _ClassVar[AdminAction]
    ADMIN_ACTION_RATE_APPROVE: _ClassVar[AdminAction]
    ADMIN_ACTION_RATE_REJECT: _ClassVar[AdminAction]
    ADMIN_ACTION_DLQ_REPLAY: _ClassVar[AdminAction]
    ADMIN_ACTION_COMPENSATION_RUN: _ClassVar[AdminAction]
    ADMIN_ACTION_FAULTS_SET: _ClassVar[AdminAction]
    ADMIN_ACTION_DISCREPANCY_RESOLVE: _ClassVar[AdminAction]
CHANGE_STATE_UNSPECIFIED: ChangeState
CHANGE_STATE_PROPOSED: ChangeState
CHANGE_STATE_APPLIED: ChangeState
CHANGE_STATE_REJECTED: ChangeState
CHANGE_STATE_EXPIRED: ChangeState
ADMIN_ACTION_UNSPECIFIED: AdminAction
ADMIN_ACTION_GATE_SET: AdminAction
ADMIN_ACTION_GATE_PROPOSE: AdminAction
ADMIN_ACTION_GATE_APPROVE: AdminAction
ADMIN_ACTION_GATE_REJECT: AdminAction
ADMIN_ACTION_RATE_SET: AdminAction
ADMIN_ACTION_RATE_PROPOSE: AdminAction
ADMIN_ACTION_RATE_APPROVE: AdminAction
ADMIN_ACTION_RATE_REJECT: AdminAction
ADMIN_ACTION_DLQ_REPLAY: AdminAction
ADMIN_ACTION_COMPENSATION_RUN: AdminAction
ADMIN_ACTION_FAULTS_SET: AdminAction
ADMIN_ACTION_DISCREPANCY_RESOLVE: AdminAction

class ChangeReview(_message.Message):
    __slots__ = ("change_id", "proposer", "create_time", "expire_time", "state", "decided_by", "decide_time", "reason", "decision_reason")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROPOSER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    proposer: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    state: ChangeState
    decided_by: str
    decide_time: _timestamp_pb2.Timestamp
    reason: str
    decision_reason: str
    def __init__(self, change_id: _Optional[str] = ..., proposer: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ChangeState, str]] = ..., decided_by: _Optional[str] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., decision_reason: _Optional[str] = ...) -> None: ...

class AdminAuditEntry(_message.Message):
    __slots__ = ("audit_id", "audit_time", "actor", "action", "target", "old_json", "new_json", "reason", "action_kind")
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OLD_JSON_FIELD_NUMBER: _ClassVar[int]
    NEW_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_KIND_FIELD_NUMBER: _ClassVar[int]
    audit_id: int
    audit_time: _timestamp_pb2.Timestamp
    actor: str
    action: str
    target: str
    old_json: str
    new_json: str
    reason: str
    action_kind: AdminAction
    def __init__(self, audit_id: _Optional[int] = ..., audit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., old_json: _Optional[str] = ..., new_json: _Optional[str] = ..., reason: _Optional[str] = ..., action_kind: _Optional[_Union[AdminAction, str]] = ...) -> None: ...
