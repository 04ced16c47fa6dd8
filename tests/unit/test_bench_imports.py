"""Every bench script imports as `bench.<name>`, the way `python -m bench.<name>` and
`make bench BENCH=<name>` run it (a sibling import such as `from payout_drain import ...`
only works when the script's own folder is on sys.path)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


def test_the_bench_folder_has_scripts() -> None:
    assert {"cost_per_order", "payout_drain", "payout_unlimited"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_imports_as_a_module_of_the_package(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__name__ == f"bench.{name}"
