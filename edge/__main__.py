"""`python -m edge issue --uid U [--lifetime-s S]` prints a session token for user U, signed
with SESSION_TOKEN_ACTIVE_KEY of SESSION_TOKEN_KEYS (or, with MESH_ENV=dev and no keys, the
well-known dev key). Send it as `authorization: Bearer <token>`."""

from __future__ import annotations

import argparse
import os
import sys
import time

from edge.sessions import DEFAULT_LIFETIME_S, issue, keys_from_env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("issue", help="sign one session token and print it")
    one.add_argument("--uid", type=int, required=True)
    one.add_argument("--lifetime-s", type=int, default=DEFAULT_LIFETIME_S,
                     help=f"seconds until it expires (default {DEFAULT_LIFETIME_S})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        keys = keys_from_env(os.environ)
        token = issue(keys, args.uid, now=time.time(), lifetime_s=args.lifetime_s)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
