"""Hand issued rewards to the ledger through the ingest stream, which account_svc's bulk
credit loop consumes in batches.

The stream is partitioned (campaign.partitions): each token goes to its uid's partition, so
one user's rewards stay in order in one stream while several consumers share the load.

An entry carries either one token (field `token`) or several, newline-separated (field
`tokens`), all of one partition. Packing matters at campaign rates: per stream entry, Redis
and the consumer's client pay a fixed cost several times that of checking one token, so one
entry per reward would make the stream, not the ledger, the limit. A packed entry is
acknowledged only after every token in it is handled, and each refused token is reported on
its own."""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as redis

from campaign.partitions import DEFAULT_PARTITIONS, checked_partitions, partition_of
from meshkit.redis_keys import Keys
from meshkit.streams import trace_fields

TOKEN_FIELD = "token"
TOKENS_FIELD = "tokens"
DEFAULT_PER_ENTRY = 50
# One pipeline round trip per chunk of entries keeps a huge publish from one giant buffer.
_CHUNK = 1000
# Where a token whose uid cannot be read goes: the consumer refuses it (MALFORMED) anyway.
UNREADABLE_PARTITION = 0
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def uid_in(token: str) -> int | None:
    """The uid a token's payload names, unchecked (the ledger verifies the seal); None when
    the payload does not parse. Only routes the token to a partition."""
    payload = token.partition(".")[0]
    try:
        raw = binascii.a2b_base64((payload + "=" * (-len(payload) % 4)).encode().translate(_FROM_URLSAFE))
        body = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return None
    uid = body.get("uid") if isinstance(body, dict) else None
    return uid if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0 else None


def partition_of_token(token: str, partitions: int) -> int:
    uid = uid_in(token)
    return UNREADABLE_PARTITION if uid is None else partition_of(uid, partitions)


async def publish_rewards(
    client: redis.Redis, keys: Keys, tokens: Sequence[str], *, uids: Sequence[int] | None = None,
    per_entry: int = DEFAULT_PER_ENTRY, partitions: int = DEFAULT_PARTITIONS,
) -> list[str]:
    """XADD the tokens, each to its uid's partition in order, `per_entry` to a stream entry;
    returns the entry ids (partition by partition). `uids[i]`, when given, is the uid of
    `tokens[i]` (the issuer signed them): routing then reads no payload, which costs more
    than a consumer's whole work per token otherwise."""
    if per_entry < 1:
        raise ValueError("per_entry must be >= 1")
    checked_partitions(partitions, "partitions")
    if uids is not None and len(uids) != len(tokens):
        raise ValueError(f"{len(uids)} uids for {len(tokens)} tokens")
    routes = ([partition_of(uid, partitions) for uid in uids] if uids is not None
              else [partition_of_token(token, partitions) for token in tokens])
    by_partition: dict[int, list[str]] = {}
    for token, partition in zip(tokens, routes, strict=True):
        by_partition.setdefault(partition, []).append(token)
    extra = trace_fields()
    entries = [(keys.credit_stream(partition), chunk[i:i + per_entry])
               for partition, chunk in sorted(by_partition.items())
               for i in range(0, len(chunk), per_entry)]
    ids: list[str] = []
    for start in range(0, len(entries), _CHUNK):
        pipe = client.pipeline(transaction=False)
        for stream, group in entries[start:start + _CHUNK]:
            fields: dict[Any, Any] = ({TOKEN_FIELD: group[0]} if len(group) == 1
                                      else {TOKENS_FIELD: "\n".join(group)})
            fields.update(extra)
            pipe.xadd(stream, fields)
        for entry_id in await pipe.execute():
            ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    return ids
