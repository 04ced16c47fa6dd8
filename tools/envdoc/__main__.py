"""`python -m tools.envdoc [--check]`: write ENVIRONMENT.md, or fail if it is stale or a
variable is not described."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.envdoc.meanings import MEANINGS
from tools.envdoc.render import fold_services, render
from tools.envdoc.scan import scan

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "ENVIRONMENT.md"


def problems(found: dict[str, object], meanings: dict[str, str]) -> list[str]:
    out = [f"{name} is read by the code but has no meaning in tools/envdoc/meanings.py"
           for name in sorted(found) if not meanings.get(name, "").strip()]
    out += [f"{name} is described in tools/envdoc/meanings.py but nothing reads it"
            for name in sorted(meanings) if name not in found]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if ENVIRONMENT.md is not current")
    args = parser.parse_args(argv)
    found = fold_services(scan(ROOT))
    issues = problems(dict(found), MEANINGS)
    for issue in issues:
        print(f"envdoc: {issue}", file=sys.stderr)
    if issues:
        return 1
    text = render(found, MEANINGS)
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print("envdoc: ENVIRONMENT.md is stale; run `make envdoc`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"envdoc: wrote {TARGET.name} ({len(found)} variables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
