"""Make every folder of generated code a package, so mypy and imports see `mesh.*`."""

import sys
from pathlib import Path

root = Path(sys.argv[1])
for folder in [p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__"]:
    (folder / "__init__.py").touch()
