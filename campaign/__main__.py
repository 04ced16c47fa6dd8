"""`python -m campaign issue --uid U --amount-fen N [--source S] [--reward-id R] [--publish]`
prints a signed reward token (keys from REWARD_TOKEN_KEYS / REWARD_TOKEN_ACTIVE_KEY) and,
with --publish, puts it on the ingest stream for bulk crediting."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from campaign.partitions import partitions_from
from campaign.publish import publish_rewards
from campaign.tokens import RewardGrant, keyring_from_env
from meshkit.errors import InvalidArgument
from meshkit.redis_client import open_redis
from meshkit.redis_keys import Keys
from meshkit.settings import DEFAULT_REDIS_URL, env_str


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m campaign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="sign one reward token and print it")
    issue.add_argument("--uid", type=int, required=True)
    issue.add_argument("--amount-fen", type=int, required=True)
    issue.add_argument("--source", default="red_packet")
    issue.add_argument("--reward-id", default="", help="default: a fresh random id")
    issue.add_argument("--issued-at", type=int, default=0, help="Unix seconds; default now")
    issue.add_argument("--publish", action="store_true", help="also XADD it to the ingest stream")
    return parser


async def _publish(token: str, uid: int) -> str:
    client = open_redis(env_str("REDIS_URL", DEFAULT_REDIS_URL))
    try:
        ids = await publish_rewards(client, Keys(env_str("MESH_KEY_PREFIX", "mesh")), [token], uids=[uid],
                                    partitions=partitions_from(os.environ))
    finally:
        await client.aclose()
    return ids[0]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        ring = keyring_from_env(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    grant = RewardGrant(
        reward_id=args.reward_id or f"rw-{uuid.uuid4().hex}",
        uid=args.uid,
        amount_fen=args.amount_fen,
        source=args.source,
        issued_at=args.issued_at or int(time.time()),
    )
    try:
        token = ring.sign(grant)
    except InvalidArgument as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(token)
    if args.publish:
        stream_id = asyncio.run(_publish(token, grant.uid))
        print(f"published {grant.reward_id} as stream entry {stream_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
