"""Every target the Makefile declares .PHONY has a recipe, and `make bench` lists the benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from bench.__main__ import benchmarks, listing
from bench.__main__ import main as bench_main

ROOT = Path(__file__).resolve().parents[2]
# Only these run nothing of their own: `ci` is the list of checks CI runs, `venv` and `proto`
# name the stamps of the installed venv and of the generated code (file targets with recipes).
AGGREGATES = {"ci": ["lint", "typecheck", "proto-check", "proto-breaking", "test"],
              "venv": [".venv/.installed"], "proto": ["gen/.stamp"]}


def make_database(makefile: Path) -> str:
    """make's own reading of the file (`make -pn`): what it would run, not what the text looks like."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    command = ["make", "-pn", "-f", str(makefile), "-C", str(makefile.parent), "VENV=.venv", "help"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True, timeout=60)
    return done.stdout


def phony_without_recipe(database: str) -> dict[str, list[str]]:
    """Targets make marks 'Phony target' whose entry has no 'recipe to execute' → their prerequisites."""
    missing: dict[str, list[str]] = {}
    for entry in database.split("\n# Files\n", 1)[1].split("\n\n"):
        head = re.match(r"([A-Za-z0-9_.-]+):(.*)", entry.strip())
        if head and "#  Phony target" in entry and "#  recipe to execute" not in entry:
            missing[head.group(1)] = head.group(2).split()
    return missing


def test_every_phony_target_of_the_makefile_has_a_recipe() -> None:
    database = make_database(ROOT / "Makefile")
    assert "test-integration:" in database and "bench:" in database
    assert phony_without_recipe(database) == AGGREGATES


def test_the_check_finds_a_declared_target_without_a_recipe(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(".PHONY: empty help only-prerequisites\n"
                        "empty:\n"
                        "help:\n\t@echo help\n"
                        "only-prerequisites: help\n")
    assert phony_without_recipe(make_database(makefile)) == {"empty": [], "only-prerequisites": ["help"]}


def test_bench_lists_the_programs_of_bench_and_not_what_they_share() -> None:
    found = benchmarks()
    assert {"cost_per_order", "payout_drain", "recon_lag"} <= set(found)
    assert not {"pgstate", "seeding", "__main__", "__init__"} & set(found)
    assert all(summary for summary in found.values())
    assert "  payout_drain  " in listing({"payout_drain": "x", "cost": "y"})


def test_bench_refuses_an_unknown_name() -> None:
    assert bench_main(["no_such_bench"]) == 2
