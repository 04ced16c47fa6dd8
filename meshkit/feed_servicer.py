"""The ChangeFeedService every stateful service registers over its own feed (its `changes`
table, or a view of the same shape over an append-only log of its own)."""

from __future__ import annotations

import json

import asyncpg
import grpc

from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from meshkit import changefeed, paging
from meshkit.timeconv import to_ts


class ChangeFeedServicer(feed_pb2_grpc.ChangeFeedServiceServicer):
    def __init__(self, pool: asyncpg.Pool, source: str = changefeed.CHANGES) -> None:
        self.pool = pool
        self.source = source

    async def ReadChanges(
        self, request: feed_pb2.ReadChangesRequest, context: grpc.aio.ServicerContext
    ) -> feed_pb2.ReadChangesResponse:
        limit = paging.BULK_LIST.of(request.limit, field="limit")
        changes, cursor = await changefeed.read(self.pool, request.cursor, limit, self.source)
        return feed_pb2.ReadChangesResponse(
            changes=[
                feed_pb2.Change(
                    cursor=c.cursor, kind=c.kind, key=c.key,
                    payload_json=_json(c.payload), create_time=to_ts(c.created_at),
                )
                for c in changes
            ],
            next_cursor=cursor,
        )


def _json(payload: dict[str, object]) -> str:
    return json.dumps(payload, sort_keys=True)
