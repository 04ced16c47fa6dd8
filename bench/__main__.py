"""`python -m bench` lists the benchmarks; `python -m bench NAME [ARGS...]` runs one (`make bench`).

A benchmark is a module of this package that runs as a program (it ends in an
`if __name__ == "__main__":` block); the others (pgstate, seeding) are what benchmarks share.
Whether one needs `make up`'s mesh and how long it takes is in its docstring and BENCHMARKS.md.
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _runs_as_a_program(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"
               for node in tree.body)


def benchmarks() -> dict[str, str]:
    """Benchmark name → the first paragraph of its docstring, on one line."""
    found: dict[str, str] = {}
    for path in sorted(HERE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        if path.stem != "__main__" and _runs_as_a_program(tree):
            found[path.stem] = " ".join((ast.get_docstring(tree) or "").split("\n\n")[0].split())
    return found


def listing(found: dict[str, str]) -> str:
    width = max(map(len, found))
    lines = [f"  {name:<{width}}  {summary}" for name, summary in found.items()]
    return "\n".join(["benchmarks (make bench BENCH=name BENCH_ARGS=...; --help for each one's options):",
                      *lines])


def main(argv: list[str]) -> int:
    found = benchmarks()
    if not argv:
        print(listing(found))
        return 0
    name, *args = argv
    if name not in found:
        print(f"bench: no benchmark {name!r}\n{listing(found)}", file=sys.stderr)
        return 2
    sys.argv = [f"bench.{name}", *args]
    runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
