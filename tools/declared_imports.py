#!/usr/bin/env python3
"""Every third-party module the project imports comes from a dependency it declares.

    python tools/declared_imports.py        # prints what is undeclared, exit 1 if anything

A package that arrives only as someone else's dependency (numpy through matplotlib, tzdata
through nothing at all) works until that someone drops it. Imports are read with ast, so
conditional and function-local ones count too; the distribution that provides a module is
found from the installed distributions' file lists (RECORD), most specific module path first,
which tells namespace packages apart (opentelemetry.sdk is opentelemetry-sdk, not -api).
Service code may use runtime dependencies only: the dev and load extras are not installed
where the services run.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"gen", ".venv", ".run", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", "requirements"}
SERVICE_PACKAGES = ("meshkit", "account_svc", "withdraw_svc", "payout_svc", "recon_svc", "gateway_mock",
                    "campaign")
# Stdlib modules that, on a machine without the system's data, need a PyPI package to work.
STDLIB_NEEDS = {"zoneinfo": "tzdata"}


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    assert m, req
    return canonical(m.group(1))


def declared(pyproject: Path) -> dict[str, set[str]]:
    """Canonical names per group: "runtime" ([project] dependencies) and each extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    groups = {"runtime": {requirement_name(r) for r in project.get("dependencies", [])}}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[extra] = {requirement_name(r) for r in reqs}
    return groups


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # the most specific dotted name the statement reaches


def imports_in(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from opentelemetry import trace`: the name may be a submodule, and in a namespace
            # package only the submodule says which distribution it is.
            for alias in node.names:
                yield Import(path, node.lineno, f"{node.module}.{alias.name}")


def source_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts):
            yield path


def first_party(root: Path, imp: Import) -> bool:
    top = imp.module.split(".")[0]
    # protos/<top>: the generated package, whether or not gen/ has been generated yet.
    local = (root / top, root / f"{top}.py", root / "protos" / top, imp.path.parent / f"{top}.py")
    return any(p.exists() for p in local)  # the last one: scripts importing a sibling script


def module_providers() -> dict[str, set[str]]:
    """Dotted module or package name → canonical names of the installed distributions shipping it."""
    providers: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        for file in dist.files or []:
            parts = file.parts
            if not parts or parts[0].endswith((".dist-info", ".egg-info", ".data")) or ".." in parts:
                continue
            leaf = parts[-1]
            if not leaf.endswith((".py", ".so", ".pyd")):
                continue
            stem = leaf.split(".")[0]
            dotted = [*parts[:-1]] if stem == "__init__" else [*parts[:-1], stem]
            for i in range(1, len(dotted) + 1):
                providers.setdefault(".".join(dotted[:i]), set()).add(name)
    return providers


def providers_of(module: str, providers: dict[str, set[str]]) -> set[str]:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if found := providers.get(".".join(parts[:i])):
            return found
    return set()


def allowed_groups(root: Path, path: Path, groups: dict[str, set[str]]) -> set[str]:
    if path.relative_to(root).parts[0] in SERVICE_PACKAGES:
        return groups["runtime"]
    return set().union(*groups.values())


def undeclared(root: Path, files: Iterable[Path], groups: dict[str, set[str]]) -> list[str]:
    """One line per import that no declared dependency (of the right group) provides."""
    providers = module_providers()
    problems: list[str] = []
    for path in files:
        allowed = allowed_groups(root, path, groups)
        for imp in imports_in(path):
            top = imp.module.split(".")[0]
            where = f"{path.relative_to(root)}:{imp.line}"
            if top in STDLIB_NEEDS and STDLIB_NEEDS[top] not in allowed:
                problems.append(f"{where}: {top} needs {STDLIB_NEEDS[top]} declared "
                                "(no system time zone data on some machines)")
            if top in sys.stdlib_module_names or top == "__future__" or first_party(root, imp):
                continue
            found = providers_of(imp.module, providers)
            if not found:
                problems.append(f"{where}: {imp.module} is provided by no installed distribution")
            elif not found & allowed:
                problems.append(f"{where}: {imp.module} comes from {', '.join(sorted(found))}, "
                                "which is not a declared dependency"
                                + (" of the runtime group" if allowed == groups["runtime"] else ""))
    return problems


def main() -> int:
    problems = undeclared(ROOT, source_files(ROOT), declared(ROOT / "pyproject.toml"))
    print("\n".join(problems) or "every third-party import is a declared dependency")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
