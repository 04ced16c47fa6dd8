"""Faults a drill or a test injects into withdraw_svc, at points production code marks
with a hook. The composition root builds the plan from the settings; with nothing
enabled every hook is None and production code does nothing extra."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from withdraw_svc.settings import Settings

log = logging.getLogger(__name__)

# Called with the order id of the refund about to be made.
BeforeRefund = Callable[[str], None]

# The status a process killed by SIGKILL reports (128 + 9), so a test tells this crash
# from any other exit.
KILLED_STATUS = 137


def exit_before_refund(order_id: str) -> None:
    """Die as kill -9 would, between an order's FAILED (committed) and its refund call:
    no cleanup, no flush of anything but this line."""
    log.warning("WITHDRAW_TEST_CRASH_BEFORE_REFUND: exiting before refunding %s", order_id)
    os._exit(KILLED_STATUS)


@dataclass(frozen=True)
class FaultPlan:
    before_refund: BeforeRefund | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FaultPlan:
        return cls(before_refund=exit_before_refund if settings.test_crash_before_refund else None)
