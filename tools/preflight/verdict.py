"""Check results, waivers and the final go/no-go line. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum


class Status(StrEnum):
    OK = "OK"
    FAIL = "FAIL"
    WAIVED = "WAIVED"


@dataclass(frozen=True)
class Result:
    """One row of the table. `reason` is the short text the NO-GO line names (failures only)."""

    name: str
    status: Status
    detail: str
    reason: str = ""


def ok(name: str, detail: str) -> Result:
    return Result(name, Status.OK, detail)


def fail(name: str, reason: str, detail: str = "") -> Result:
    return Result(name, Status.FAIL, detail or reason, reason)


def judged(name: str, problems: Sequence[str], detail: str) -> Result:
    """OK when there are no problems; else FAIL naming every problem."""
    if problems:
        return fail(name, "; ".join(problems), detail)
    return ok(name, detail)


def apply_waivers(results: Iterable[Result], waived: Iterable[str]) -> list[Result]:
    """A waived check that failed is WAIVED (still shown, with why it failed); a waived check
    that passed stays OK, so a waiver never hides that it was not needed."""
    names = set(waived)
    return [replace(r, status=Status.WAIVED) if r.status is Status.FAIL and r.name in names else r
            for r in results]


def final_line(results: Sequence[Result]) -> str:
    failed = [r for r in results if r.status is Status.FAIL]
    if failed:
        return "PREFLIGHT NO-GO " + "; ".join(f"{r.name}: {r.reason}" for r in failed)
    waived = [r.name for r in results if r.status is Status.WAIVED]
    if waived:
        return f"PREFLIGHT GO (waived: {', '.join(waived)})"
    return "PREFLIGHT GO"


def exit_code(results: Sequence[Result]) -> int:
    return 1 if any(r.status is Status.FAIL for r in results) else 0
