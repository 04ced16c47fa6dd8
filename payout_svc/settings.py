"""Configuration of payout_svc, read once at start."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field

from meshkit.four_eyes import FourEyesSettings
from meshkit.settings import CommonSettings, addr_of, env_float, env_int, env_list, env_str
from payout_svc.domain import ChannelRate, parse_rates

DEFAULT_CHANNELS = ["bank", "alipay", "balance"]
DEFAULT_RATES = "bank:2000,alipay:5000,balance:10000"


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    withdraw_addr: str                        # WITHDRAW_SVC_ADDR
    gateway_addr: str                         # GATEWAY_MOCK_ADDR
    channels: tuple[str, ...]                 # PAYOUT_CHANNELS
    workers_per_channel: int                  # PAYOUT_WORKERS_PER_CHANNEL: concurrent batches per channel (2)
    batch_size: int                           # PAYOUT_BATCH_SIZE: messages taken at once (1..500, 32)
    batch_linger_ms: int                      # PAYOUT_BATCH_LINGER_MS: a short batch waits (0..1000, 100)
    # PAYOUT_DEFAULT_RATES seeds channel_config: "bank:2000,alipay:unlimited" (per second;
    # 0 or a channel left out: paused).
    default_rates: dict[str, ChannelRate]
    max_attempts: int                         # PAYOUT_MAX_ATTEMPTS before the dead-letter stream
    claim_idle_ms: int                        # PAYOUT_CLAIM_IDLE_MS: reclaim messages idle this long
    lock_ttl_ms: int                          # PAYOUT_LOCK_TTL_MS: order lock expiry (extended while held)
    retry_backoff_ms: int                     # PAYOUT_RETRY_BACKOFF_MS: base delay before a retry copy
    busy_backoff_ms: int                      # PAYOUT_BUSY_BACKOFF_MS: pause after RESOURCE_EXHAUSTED
    await_poll_ms: int                        # PAYOUT_AWAIT_POLL_MS: re-check period of async payouts
    rate_refresh_s: float                     # PAYOUT_RATE_REFRESH_S: re-read channel_config
    metrics_interval_s: float                 # PAYOUT_METRICS_INTERVAL_S: channel gauge sampling
    rate_margin_ms: int                       # PAYOUT_RATE_MARGIN_MS: limiter window is 1 s + this
    gateway_timeout_s: float                  # PAYOUT_GATEWAY_TIMEOUT_S: deadline of gateway calls
    withdraw_timeout_s: float                 # PAYOUT_WITHDRAW_TIMEOUT_S: deadline of withdraw calls
    db_pool_size: int                         # PAYOUT_DB_POOL_SIZE: PostgreSQL holds only the rates
    group: str                                # PAYOUT_GROUP: consumer group name
    consumer: str                             # PAYOUT_CONSUMER: this process's consumer name
    # Four-eyes admin changes (ADMIN_FOUR_EYES, MESH_ENV, ADMIN_CHANGE_TTL_S).
    four_eyes: FourEyesSettings = field(default_factory=FourEyesSettings)

    @classmethod
    def from_env(cls) -> Settings:
        channels = tuple(env_list("PAYOUT_CHANNELS", DEFAULT_CHANNELS))
        default_consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            rates = parse_rates(env_str("PAYOUT_DEFAULT_RATES", DEFAULT_RATES))
        except ValueError as exc:
            raise SystemExit(f"PAYOUT_DEFAULT_RATES: {exc}") from exc
        return cls(
            common=CommonSettings.from_env("payout_svc", "payout"),
            withdraw_addr=addr_of("withdraw_svc"),
            gateway_addr=addr_of("gateway_mock"),
            channels=channels,
            workers_per_channel=max(1, env_int("PAYOUT_WORKERS_PER_CHANNEL", 2)),
            batch_size=min(500, max(1, env_int("PAYOUT_BATCH_SIZE", 32))),
            batch_linger_ms=min(1000, max(0, env_int("PAYOUT_BATCH_LINGER_MS", 100))),
            default_rates=rates,
            max_attempts=max(1, env_int("PAYOUT_MAX_ATTEMPTS", 3)),
            claim_idle_ms=max(100, env_int("PAYOUT_CLAIM_IDLE_MS", 5000)),
            lock_ttl_ms=max(300, env_int("PAYOUT_LOCK_TTL_MS", 30_000)),
            retry_backoff_ms=max(0, env_int("PAYOUT_RETRY_BACKOFF_MS", 100)),
            busy_backoff_ms=max(1, env_int("PAYOUT_BUSY_BACKOFF_MS", 50)),
            await_poll_ms=max(50, env_int("PAYOUT_AWAIT_POLL_MS", 1000)),
            rate_refresh_s=env_float("PAYOUT_RATE_REFRESH_S", 2.0),
            metrics_interval_s=env_float("PAYOUT_METRICS_INTERVAL_S", 1.0),
            rate_margin_ms=max(0, env_int("PAYOUT_RATE_MARGIN_MS", 20)),
            gateway_timeout_s=env_float("PAYOUT_GATEWAY_TIMEOUT_S", 3.0),
            withdraw_timeout_s=env_float("PAYOUT_WITHDRAW_TIMEOUT_S", 3.0),
            db_pool_size=max(1, env_int("PAYOUT_DB_POOL_SIZE", 3)),
            group=env_str("PAYOUT_GROUP", "payout"),
            consumer=env_str("PAYOUT_CONSUMER", default_consumer),
            four_eyes=FourEyesSettings.from_env(),
        )
