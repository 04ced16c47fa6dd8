"""The table printed above the verdict: one row per check."""

from __future__ import annotations

from collections.abc import Sequence

from tools.preflight.verdict import Result

HEADERS = ("check", "status", "detail")


def render(results: Sequence[Result]) -> str:
    rows = [HEADERS, *((r.name, str(r.status), r.detail) for r in results)]
    name_w = max(len(row[0]) for row in rows)
    status_w = max(len(row[1]) for row in rows)
    lines = []
    for name, status, detail in rows:
        # A multi-line detail keeps its lines under the detail column.
        first, *rest = detail.splitlines() or [""]
        lines.append(f"{name:<{name_w}}  {status:<{status_w}}  {first}".rstrip())
        lines.extend(" " * (name_w + status_w + 4) + more for more in rest)
    return "\n".join(lines)
