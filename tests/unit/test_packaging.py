"""Packaging: imports declared, pyproject and requirements/*.in agree, locks hashed and coherent."""

from __future__ import annotations

import re
from pathlib import Path

from tools import declared_imports as di

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
GROUPS = {"runtime": "runtime", "dev": "dev", "load": "load"}  # pyproject group → requirements/<x>.in
GRPC_FAMILY = ("grpcio", "grpcio-tools", "grpcio-health-checking", "grpcio-reflection")


def in_file_requirements(name: str) -> set[str]:
    lines = (REQ / f"{name}.in").read_text().splitlines()
    return {di.requirement_name(line) for line in lines if line.strip() and not line.startswith(("#", "-"))}


def locked(name: str) -> dict[str, tuple[str, int]]:
    """Canonical name → (version, number of hashes) from one lock file."""
    entries: dict[str, tuple[str, int]] = {}
    current = ""
    for line in (REQ / f"{name}.txt").read_text().splitlines():
        if m := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = di.canonical(m.group(1))
            entries[current] = (m.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = entries[current]
            entries[current] = (version, hashes + 1)
    return entries


def test_every_third_party_import_is_a_declared_dependency() -> None:
    problems = di.undeclared(ROOT, di.source_files(ROOT), di.declared(ROOT / "pyproject.toml"))
    assert problems == []


def test_checker_flags_transitive_only_imports_and_zoneinfo_without_tzdata(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0"\ndependencies = ["grpcio==1"]\n'
        '[project.optional-dependencies]\nload = ["numpy==2"]\n')
    (tmp_path / "meshkit").mkdir()
    service = tmp_path / "meshkit" / "clock.py"
    service.write_text("import grpc\nimport numpy\nfrom zoneinfo import ZoneInfo\n")
    tool = tmp_path / "tools" / "report.py"
    tool.parent.mkdir()
    # wrapt is installed only because opentelemetry-instrumentation needs it.
    tool.write_text("import numpy\n\ndef f() -> None:\n    import wrapt\n")
    problems = di.undeclared(tmp_path, [service, tool], di.declared(tmp_path / "pyproject.toml"))
    assert len(problems) == 3, problems
    assert problems[0].startswith("meshkit/clock.py:2: numpy comes from numpy,")
    assert problems[0].endswith("of the runtime group")
    assert problems[1].startswith("meshkit/clock.py:3: zoneinfo needs tzdata")
    assert problems[2].startswith("tools/report.py:4: wrapt comes from wrapt,")


def test_namespace_packages_resolve_to_the_distribution_of_the_submodule() -> None:
    providers = di.module_providers()
    assert di.providers_of("opentelemetry.sdk.trace.TracerProvider", providers) == {"opentelemetry-sdk"}
    assert di.providers_of("opentelemetry.trace.Span", providers) == {"opentelemetry-api"}
    assert di.providers_of("google.protobuf.timestamp_pb2", providers) == {"protobuf"}


def test_pyproject_declares_exactly_the_in_files() -> None:
    declared = di.declared(ROOT / "pyproject.toml")
    assert set(declared) == set(GROUPS)
    for group, in_file in GROUPS.items():
        assert declared[group] == in_file_requirements(in_file), group


def test_every_locked_distribution_is_hashed_and_one_version_across_locks() -> None:
    versions: dict[str, set[str]] = {}
    for name in GROUPS.values():
        entries = locked(name)
        assert in_file_requirements(name) <= set(entries), name  # each direct dependency is locked
        for dist, (version, hashes) in entries.items():
            assert hashes > 0, f"{name}.txt: {dist} has no hash"
            versions.setdefault(dist, set()).add(version)
        text = (REQ / f"{name}.txt").read_text()
        # a lock that names an index or a wheel directory would not install elsewhere
        assert not re.search(r"^\s*(--index-url|--extra-index-url|--find-links|-f |-i )", text, re.M), name
    assert {d: v for d, v in versions.items() if len(v) > 1} == {}


def test_grpcio_family_on_one_version() -> None:
    entries = {**locked("runtime"), **locked("dev")}
    assert len({entries[d][0] for d in GRPC_FAMILY}) == 1, {d: entries[d][0] for d in GRPC_FAMILY}
