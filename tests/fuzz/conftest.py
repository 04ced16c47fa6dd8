"""Hypothesis profiles of the fuzz tests, chosen by HYPOTHESIS_PROFILE:

- "ci" (the default, what `make test` runs): 50 examples per RPC, derandomized so CI runs
  the same cases every time;
- "fuzz" (`make fuzz`): 2,000 examples per RPC (FUZZ_EXAMPLES), random, failures printed
  with the blob to reproduce them (@reproduce_failure).

Deadlines are off (a call's time depends on the shared box, not on the case), and so are
the health checks that a slow or large draw trips: large values are drawn on purpose.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.fuzz import stats

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.large_base_example, HealthCheck.filter_too_much],
    # No "explain": it reruns every failing case many times over the network.
    "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
}
settings.register_profile("ci", max_examples=50, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")),
                          print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not stats.CALLS:
        return
    write = terminalreporter.write_line
    per_rpc = stats.CALLS
    write(f"fuzz: {sum(per_rpc.values())} calls to {len(per_rpc)} RPCs, profile "
          f"{settings.get_current_profile_name()!r}: min {min(per_rpc.values())}, "
          f"max {max(per_rpc.values())} per RPC")
    codes: Counter[str] = Counter()
    for (_, code), n in stats.CODES.items():
        codes[code] += n
    write("fuzz: statuses " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))
    for rpc, n in sorted(per_rpc.items()):
        mine = sorted(((code, k) for (name, code), k in stats.CODES.items() if name == rpc),
                      key=lambda x: -x[1])
        write(f"  {rpc}: {n} ({', '.join(f'{c} {k}' for c, k in mine)})")
