"""A running service freezes what start-up allocated and collects gen 0 less often."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from meshkit.server import tune_gc
before = gc.get_threshold()
tune_gc({gen0})
print(gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], gc.get_freeze_count() > 0)
"""


def probe(gen0: int) -> str:
    # A child process: the test process's own collector stays as it is.
    out = subprocess.run([sys.executable, "-c", PROBE.format(gen0=gen0)], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def test_a_threshold_freezes_start_up_objects_and_raises_gen0_only() -> None:
    assert probe(50_000) == "50000 True True"


def test_zero_keeps_pythons_defaults() -> None:
    assert probe(0) == "700 True False"
