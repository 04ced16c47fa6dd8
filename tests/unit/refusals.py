"""What the unit tests of input checks share: the refusal a call raises."""

from __future__ import annotations

import pytest

from meshkit.errors import Code, InvalidArgument


def refusal(call: object, *args: object, **kwargs: object) -> InvalidArgument:
    """The INVALID_ARGUMENT `call(*args, **kwargs)` raises (the test fails if it raises none)."""
    assert callable(call)
    with pytest.raises(InvalidArgument) as info:
        call(*args, **kwargs)
    assert info.value.code is Code.INVALID_ARGUMENT
    return info.value
