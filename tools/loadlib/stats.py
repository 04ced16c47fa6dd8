"""Latency and outcome bookkeeping: every call lands in the current one-second window (for
the time series) and in the run totals (for the summary)."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)
# The code under which a load driver records a call refused by admission (RESOURCE_EXHAUSTED).
SHED = "SHED"


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open window [t, t + window) starting at an event."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def percentiles(values: array[float] | list[float]) -> dict[str, float | None]:
    if len(values) == 0:
        empty: dict[str, float | None] = {f"p{p}": None for p in PERCENTILES}
        return empty | {"max": None, "mean": None}
    data = np.frombuffer(values, dtype=np.float64) if isinstance(values, array) else np.asarray(values)
    points = np.percentile(data, PERCENTILES)
    out: dict[str, float | None] = {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, points,
                                                                                 strict=True)}
    out["max"] = round(float(data.max()), 3)
    out["mean"] = round(float(data.mean()), 3)
    return out


@dataclass
class Window:
    latencies: dict[str, array[float]] = field(default_factory=dict)
    codes: dict[str, Counter[str]] = field(default_factory=dict)


class Recorder:
    """Per-RPC latencies (ms) and status codes; `roll()` closes the current window."""

    def __init__(self) -> None:
        self._window = Window()
        self.all_latencies: dict[str, array[float]] = {}
        self.all_codes: dict[str, Counter[str]] = {}

    def record(self, rpc: str, code: str, latency_ms: float) -> None:
        window = self._window
        if code == "OK":
            window.latencies.setdefault(rpc, array("d")).append(latency_ms)
            self.all_latencies.setdefault(rpc, array("d")).append(latency_ms)
        window.codes.setdefault(rpc, Counter())[code] += 1
        self.all_codes.setdefault(rpc, Counter())[code] += 1

    def roll(self, seconds: float) -> dict[str, dict[str, Any]]:
        """Stats of the window just closed, per RPC: rate, ok, errors by code, percentiles
        of successful calls."""
        window, self._window = self._window, Window()
        rows: dict[str, dict[str, Any]] = {}
        for rpc in sorted(set(window.codes) | set(self.all_codes)):
            codes = window.codes.get(rpc, Counter())
            total = sum(codes.values())
            ok = codes.get("OK", 0)
            rows[rpc] = {
                "calls": total,
                "ok": ok,
                "rate": round(total / seconds, 2) if seconds > 0 else 0.0,
                "shed": codes.get(SHED, 0),
                "errors": {c: n for c, n in codes.items() if c not in ("OK", SHED)},
                **percentiles(window.latencies.get(rpc, array("d"))),
            }
        return rows

    def summary(self, seconds: float) -> dict[str, dict[str, Any]]:
        """Per RPC; calls shed by the mesh's admission (code SHED) are refusals, counted
        apart from the errors: error_rate is of the calls that were not shed."""
        out: dict[str, dict[str, Any]] = {}
        for rpc, codes in sorted(self.all_codes.items()):
            total = sum(codes.values())
            ok = codes.get("OK", 0)
            shed = codes.get(SHED, 0)
            served = total - shed
            out[rpc] = {
                "calls": total,
                "ok": ok,
                "shed": shed,
                "shed_rate": round(shed / total, 5) if total else 0.0,
                "errors": {c: n for c, n in codes.items() if c not in ("OK", SHED)},
                "error_rate": round((served - ok) / served, 5) if served else 0.0,
                "rate": round(total / seconds, 2) if seconds > 0 else 0.0,
                "ok_rate": round(ok / seconds, 2) if seconds > 0 else 0.0,
                **percentiles(self.all_latencies.get(rpc, array("d"))),
            }
        return out
