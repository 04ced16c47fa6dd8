"""Calls the fuzz made, per RPC and status: printed at the end of the run (conftest), so a
run says how many cases each RPC really got."""

from __future__ import annotations

from collections import Counter

CALLS: Counter[str] = Counter()
CODES: Counter[tuple[str, str]] = Counter()


def record(rpc: str, code: str) -> None:
    CALLS[rpc] += 1
    CODES[(rpc, code)] += 1
