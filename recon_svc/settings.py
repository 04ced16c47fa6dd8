"""Configuration of recon_svc, read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meshkit.settings import (
    CommonSettings,
    addr_of,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)

# GetOrderEntriesBatch and QueryPayouts answer at most this many order ids per call.
SELF_CHECK_BATCH_MAX = 1000

# Which service serves which feed (mesh.feed.v1.ChangeFeedService on its own port).
FEED_SERVICES = {"account": "account_svc", "withdraw": "withdraw_svc", "gateway": "gateway_mock"}


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    # Feeds followed (RECON_FEEDS) and where each is served.
    feeds: tuple[tuple[str, str], ...]
    account_addr: str
    withdraw_addr: str
    gateway_addr: str
    # How often a caught-up follower polls its feed (RECON_POLL_MS) and its page size.
    poll_s: float
    page_size: int
    # A loop that finds nothing to do (a feed without changes, no check or self-check due)
    # doubles its interval up to this (RECON_IDLE_POLL_MS); new work brings it back at once.
    idle_poll_s: float
    # How long after an order settles (or after its last related change) recon waits for
    # in-flight work (a refund, an async payout record) before judging it (RECON_GRACE_S).
    grace_s: float
    # A FAILED order's refund is sent after the failure by the orchestrator's outbox relay
    # (retried with backoff): its absence is reported only this long after the order
    # failed (RECON_REFUND_GRACE_S).
    refund_grace_s: float
    # A non-terminal order older than this is stuck (RECON_STUCK_AFTER_S). The compensation
    # job pushes on orders older than 4 h once an hour, so 5 h means it had its chance.
    stuck_after_s: float
    # How often the checker looks for due orders, and how many it takes per transaction.
    check_interval_s: float
    check_batch: int
    # Query account_svc and the gateway for every settled order (RECON_SELF_CHECK), this
    # many orders per call to each (RECON_SELF_CHECK_BATCH, at most the peers' limit).
    self_check: bool
    self_check_batch: int
    # How often stuck orders, accounts that do not add up and the settled sums are looked
    # at (RECON_AUDIT_S).
    audit_interval_s: float
    # Deadline of every call to a peer.
    rpc_timeout_s: float
    webhook_url: str
    webhook_timeout_s: float
    timezone: ZoneInfo
    # PostgreSQL connections of this process (RECON_DB_POOL_SIZE).
    db_pool_size: int

    @classmethod
    def from_env(cls) -> Settings:
        feeds = env_list("RECON_FEEDS", list(FEED_SERVICES))
        unknown = [f for f in feeds if f not in FEED_SERVICES]
        if unknown:
            raise SystemExit(f"RECON_FEEDS: unknown feed(s) {unknown}; known: {sorted(FEED_SERVICES)}")
        zone_name = env_str("RECON_TIMEZONE", "Asia/Shanghai")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SystemExit(f"RECON_TIMEZONE={zone_name!r} is not a known time zone") from exc
        return cls(
            common=CommonSettings.from_env("recon_svc", "recon"),
            feeds=tuple((f, addr_of(FEED_SERVICES[f])) for f in feeds),
            account_addr=addr_of("account_svc"),
            withdraw_addr=addr_of("withdraw_svc"),
            gateway_addr=addr_of("gateway_mock"),
            poll_s=env_int("RECON_POLL_MS", 200) / 1000.0,
            page_size=env_int("RECON_PAGE_SIZE", 1000),
            idle_poll_s=env_int("RECON_IDLE_POLL_MS", 1000) / 1000.0,
            grace_s=env_float("RECON_GRACE_S", 2.0),
            refund_grace_s=env_float("RECON_REFUND_GRACE_S", 60.0),
            stuck_after_s=env_float("RECON_STUCK_AFTER_S", 5 * 3600.0),
            check_interval_s=env_int("RECON_CHECK_MS", 200) / 1000.0,
            check_batch=env_int("RECON_CHECK_BATCH", 500),
            self_check=env_bool("RECON_SELF_CHECK", True),
            self_check_batch=min(max(1, env_int("RECON_SELF_CHECK_BATCH", 500)), SELF_CHECK_BATCH_MAX),
            audit_interval_s=env_float("RECON_AUDIT_S", 10.0),
            rpc_timeout_s=env_float("RECON_RPC_TIMEOUT_S", 3.0),
            webhook_url=env_str("RECON_WEBHOOK_URL", ""),
            webhook_timeout_s=env_float("RECON_WEBHOOK_TIMEOUT_S", 3.0),
            timezone=zone,
            db_pool_size=max(2, env_int("RECON_DB_POOL_SIZE", 10)),
        )
