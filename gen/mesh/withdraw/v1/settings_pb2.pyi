from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetSettingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSettingsResponse(_message.Message):
    __slots__ = ("compensation_enabled", "compensation_interval_seconds", "compensation_min_age_seconds", "channels", "four_eyes_required")
    COMPENSATION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_MIN_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FOUR_EYES_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    compensation_enabled: bool
    compensation_interval_seconds: int
    compensation_min_age_seconds: int
    channels: _containers.RepeatedScalarFieldContainer[str]
    four_eyes_required: bool
    def __init__(self, compensation_enabled: _Optional[bool] = ..., compensation_interval_seconds: _Optional[int] = ..., compensation_min_age_seconds: _Optional[int] = ..., channels: _Optional[_Iterable[str]] = ..., four_eyes_required: _Optional[bool] = ...) -> None: ...
