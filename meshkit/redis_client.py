"""The one way the mesh opens Redis: a plain client, or a Redis Cluster client when
`REDIS_CLUSTER` says so (REDIS_URL then names any node of the cluster; the client learns
the others from it and follows slots as they move, failovers included).

Every key is cluster-safe (meshkit.redis_keys): the keys a MULTI or a script uses together
share a hash tag. What differs on a cluster is handled where it matters: a command over
several slots (XREADGROUP over the reward partitions) is split per slot, and scripts run
inside a pipeline go as EVAL (a cluster pipeline does not load scripts first)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from meshkit.settings import env_bool

CLUSTER_VAR = "REDIS_CLUSTER"


def cluster_mode(env: Mapping[str, str] | None = None) -> bool:
    """Whether REDIS_URL names a Redis Cluster (REDIS_CLUSTER, default no)."""
    return env_bool(CLUSTER_VAR, False, os.environ if env is None else env)


def open_redis(url: str, *, cluster: bool | None = None, env: Mapping[str, str] | None = None,
               **kwargs: Any) -> redis.Redis:
    """A client of `url` (redis-py keyword arguments as for redis.Redis.from_url); a
    RedisCluster when `cluster` (or REDIS_CLUSTER in `env`, default os.environ) says so.

    Typed as redis.Redis: RedisCluster has the same command methods, pipelines included,
    so callers need not tell them apart (the few places that must use is_cluster)."""
    if cluster is None:
        cluster = cluster_mode(env)
    if not cluster:
        return redis.Redis.from_url(url, **kwargs)
    # A cluster client keeps a pool per node: max_connections is per node as well.
    # The URL's database number must be 0 (a cluster has only one): redis-py refuses others.
    return cast(redis.Redis, RedisCluster.from_url(url, **kwargs))


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)
