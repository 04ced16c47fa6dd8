"""The ChangeFeedService every stateful service registers over its own feed (its `changes`
table, or a view of the same shape over an append-only log of its own)."""

from __future__ import annotations

import asyncpg
import grpc

from mesh.feed.v1 import feed_pb2, feed_pb2_grpc
from meshkit import changefeed, paging
from meshkit.feed_records import typed_change


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
            changes=[typed_change(c.cursor, c.kind, c.key, c.payload, c.created_at) for c in changes],
            next_cursor=cursor,
        )
