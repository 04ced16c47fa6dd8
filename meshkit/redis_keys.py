"""Every Redis key of the mesh, in one namespace per deployment (tests use one per run).

Cluster-safe: every key that a MULTI or a script uses together with another carries the same
hash tag (`{...}`: Redis Cluster hashes only what is inside it), so they share one slot. A
channel's stream, dead letters, dead-orders hash, awaiting set and limiter keys all carry
`{payout:<channel>}`; a reward partition's stream and refusals `{credits:<n>}`. Keys used
alone (an order lock, a user's counter, the epoch) carry no tag and spread over the slots.
Renaming a key changes nothing on the wire, only what a running mesh finds in Redis, which
may be wiped at any time by design (the outbox republishes)."""

from __future__ import annotations

from dataclasses import dataclass

# How long a methods version outlives the last bind. A cached list tagged with a version
# lives at most WITHDRAW_METHODS_CACHE_S, which must stay below this (settings cap it), so a
# version that expired and restarts from 1 can never match a list cached before it expired.
METHODS_VERSION_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Keys:
    prefix: str

    def channel_tag(self, channel: str) -> str:
        """The hash tag of every key of one payout channel: one Cluster slot per channel."""
        return f"{{payout:{channel}}}"

    def payout_stream(self, channel: str) -> str:
        return f"{self.prefix}:{self.channel_tag(channel)}"

    def payout_dead_letters(self, channel: str) -> str:
        return f"{self.prefix}:{self.channel_tag(channel)}:dlq"

    def payout_dead_orders(self, channel: str) -> str:
        """Order id -> how many of its messages sit in the channel's dead-letter stream
        (written in the same MULTI as the dead letter, decremented by replay)."""
        return f"{self.prefix}:{self.channel_tag(channel)}:dlq:orders"

    def payout_awaiting(self, channel: str) -> str:
        """Orders whose payout the gateway accepted asynchronously, scored by next check time."""
        return f"{self.prefix}:{self.channel_tag(channel)}:awaiting"

    def rate_limit(self, channel: str) -> str:
        """The channel's GCRA schedule (payout_svc.rate_limiter)."""
        return f"{self.prefix}:{self.channel_tag(channel)}:ratelimit"

    def rate_window(self, channel: str) -> str:
        """The channel's sliding log; the limiter's scripts also count calls per second in
        `<this>:<second>`, which keeps the tag and so the slot."""
        return f"{self.prefix}:{self.channel_tag(channel)}:ratewindow"

    def user_rate(self, name: str, uid: int) -> str:
        """Calls of kind `name` by `uid` in the current window (meshkit.user_limits)."""
        return f"{self.prefix}:userrate:{name}:{uid}"

    def methods_version(self, uid: int) -> str:
        """A counter of uid's bound payout methods, bumped (INCR) by the gateway after every
        bind commits: withdraw_svc tags its cached list with the value it read before asking
        the gateway and uses the list only while the counter still says that. The hash tag
        keeps it in the slot of the cached list (bound_methods): one MGET reads both on a
        Redis Cluster, and a failover or wipe of that slot loses both together."""
        return f"{self.prefix}:{{methods:{uid}}}:version"

    def order_lock(self, order_id: str) -> str:
        return f"{self.prefix}:lock:order:{order_id}"

    def bound_methods(self, uid: int) -> str:
        """withdraw_svc's cache of a user's bound payout methods, tagged with the methods
        version it was read under (withdraw_svc/bound_methods.py); in the version's slot."""
        return f"{self.prefix}:{{methods:{uid}}}:list"

    def credit_stream(self, partition: int) -> str:
        """Partition `partition` of the reward ingest stream (campaign.partitions). The hash
        tag keeps a partition's stream and its refusals in one Cluster slot (one MULTI
        acknowledges and records refusals), while partitions spread over slots."""
        return f"{self.prefix}:{{credits:{partition}}}:ingest"

    def credit_rejected(self, partition: int) -> str:
        return f"{self.prefix}:{{credits:{partition}}}:rejected"

    def rewards_ingest(self) -> str:
        """The single ingest stream before partitioning: only drained now (account_svc
        reads it as one more partition while it holds anything undelivered or pending)."""
        return f"{self.prefix}:rewards:ingest"

    def rewards_rejected(self) -> str:
        """Refusals of entries of the pre-partitioning stream."""
        return f"{self.prefix}:rewards:rejected"

    def epoch(self) -> str:
        """Set once per Redis lifetime: when it vanishes, Redis lost its data. On a cluster
        it lives on one shard only: the lineage check of each channel's master (the outbox
        relay) covers every shard that holds payout streams."""
        return f"{self.prefix}:epoch"
