"""Configuration of gateway_mock, read once at start."""

from __future__ import annotations

from dataclasses import dataclass

from meshkit.settings import CommonSettings, env_float, env_int, env_list

DEFAULT_CHANNELS = ["bank", "alipay", "balance"]


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    # Channels the platform pays through (GATEWAY_CHANNELS, comma separated).
    channels: tuple[str, ...]
    # How often PROCESSING payouts whose completion time passed are finalized.
    sweep_interval_s: float
    # How often channel faults are re-read from PostgreSQL (changes made by other replicas).
    faults_refresh_s: float
    # Seed of the fault dice; 0 draws from the OS (GATEWAY_RANDOM_SEED).
    random_seed: int
    # PostgreSQL connections of this process (GATEWAY_DB_POOL_SIZE).
    db_pool_size: int

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            common=CommonSettings.from_env("gateway_mock", "gateway"),
            channels=tuple(env_list("GATEWAY_CHANNELS", DEFAULT_CHANNELS)),
            sweep_interval_s=env_float("GATEWAY_SWEEP_INTERVAL_S", 0.2),
            faults_refresh_s=env_float("GATEWAY_FAULTS_REFRESH_S", 2.0),
            random_seed=env_int("GATEWAY_RANDOM_SEED", 0),
            db_pool_size=max(2, env_int("GATEWAY_DB_POOL_SIZE", 10)),
        )
