"""Every Redis key of the mesh, in one namespace per deployment (tests use one per run)."""

from __future__ import annotations

from dataclasses import dataclass

# How long a methods version outlives the last bind. A cached list tagged with a version
# lives at most WITHDRAW_METHODS_CACHE_S, which must stay below this (settings cap it), so a
# version that expired and restarts from 1 can never match a list cached before it expired.
METHODS_VERSION_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Keys:
    prefix: str

    def payout_stream(self, channel: str) -> str:
        return f"{self.prefix}:payout:{channel}"

    def payout_dead_letters(self, channel: str) -> str:
        return f"{self.prefix}:payout:{channel}:dlq"

    def payout_dead_orders(self, channel: str) -> str:
        """Order id -> how many of its messages sit in the channel's dead-letter stream
        (written in the same MULTI as the dead letter, decremented by replay)."""
        return f"{self.prefix}:payout:{channel}:dlq:orders"

    def payout_awaiting(self, channel: str) -> str:
        """Orders whose payout the gateway accepted asynchronously, scored by next check time."""
        return f"{self.prefix}:payout:{channel}:awaiting"

    def rate_limit(self, channel: str) -> str:
        return f"{self.prefix}:ratelimit:{channel}"

    def rate_window(self, channel: str) -> str:
        return f"{self.prefix}:ratewindow:{channel}"

    def user_rate(self, name: str, uid: int) -> str:
        """Calls of kind `name` by `uid` in the current window (meshkit.user_limits)."""
        return f"{self.prefix}:userrate:{name}:{uid}"

    def methods_version(self, uid: int) -> str:
        """A counter of uid's bound payout methods, bumped (INCR) by the gateway after every
        bind commits: withdraw_svc tags its cached list with the value it read before asking
        the gateway and uses the list only while the counter still says that."""
        return f"{self.prefix}:methods:version:{uid}"

    def order_lock(self, order_id: str) -> str:
        return f"{self.prefix}:lock:order:{order_id}"

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
        """Set once per Redis lifetime: when it vanishes, Redis lost its data."""
        return f"{self.prefix}:epoch"
