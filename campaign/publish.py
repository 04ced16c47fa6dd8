"""Hand issued rewards to the ledger through the ingest stream, which account_svc's bulk
credit loop consumes in batches.

An entry carries either one token (field `token`) or several, newline-separated (field
`tokens`). Packing matters at campaign rates: per stream entry, Redis and the consumer's
client pay a fixed cost several times that of checking one token, so one entry per reward
would make the stream, not the ledger, the limit. A packed entry is acknowledged only after
every token in it is handled, and each refused token is reported on its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis

from meshkit.redis_keys import Keys
from meshkit.streams import trace_fields

TOKEN_FIELD = "token"
TOKENS_FIELD = "tokens"
DEFAULT_PER_ENTRY = 50
# One pipeline round trip per chunk of entries keeps a huge publish from one giant buffer.
_CHUNK = 1000


async def publish_rewards(
    client: redis.Redis, keys: Keys, tokens: Sequence[str], *, per_entry: int = DEFAULT_PER_ENTRY
) -> list[str]:
    """XADD the tokens in order, `per_entry` to a stream entry; returns the entry ids."""
    if per_entry < 1:
        raise ValueError("per_entry must be >= 1")
    stream = keys.rewards_ingest()
    extra = trace_fields()
    groups = [tokens[i:i + per_entry] for i in range(0, len(tokens), per_entry)]
    ids: list[str] = []
    for start in range(0, len(groups), _CHUNK):
        pipe = client.pipeline(transaction=False)
        for group in groups[start:start + _CHUNK]:
            fields: dict[Any, Any] = ({TOKEN_FIELD: group[0]} if len(group) == 1
                                      else {TOKENS_FIELD: "\n".join(group)})
            fields.update(extra)
            pipe.xadd(stream, fields)
        for entry_id in await pipe.execute():
            ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    return ids
