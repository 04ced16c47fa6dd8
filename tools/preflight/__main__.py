"""python -m tools.preflight [--waive CHECK ...] [--night-end ISO] [--gate-window HH:MM-HH:MM]
[--release K/M]: exit 0 on GO, 1 on NO-GO, 2 on a usage error."""

from __future__ import annotations

import asyncio
import os
import sys

from tools.preflight.runner import run


def main() -> None:
    sys.exit(asyncio.run(run(sys.argv[1:], os.environ)))


if __name__ == "__main__":
    main()
