"""withdraw_svc configuration, read once at start. Every variable has a local default."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.sessions import SessionKeys
from meshkit.four_eyes import FourEyesSettings
from meshkit.redis_keys import METHODS_VERSION_TTL_S
from meshkit.settings import (
    CommonSettings,
    addr_of,
    admin_addr_of,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)
from meshkit.user_auth import session_keys_at_start
from withdraw_svc.domain import DEFAULT_TIMEZONE, GateConfig, Limits

# What the app calls, shed under load in this order last to first (WITHDRAW_SVC_ADMISSION_METHODS
# overrides). PayoutCoordinationService and the admin RPCs are absent on purpose: a payout
# worker's SettlePayout must never wait behind users reloading the page.
ADMITTED = (
    "WithdrawService/ConfirmWithdraw:0",
    "WithdrawService/GetWithdrawPage:1",
    "WithdrawService/GetOrder:2",
    "WithdrawService/ListOrders:2",
)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    # Verify the session tokens of user-facing RPCs (SESSION_TOKEN_KEYS; meshkit.user_auth).
    session_keys: SessionKeys
    account_addr: str
    gateway_addr: str
    limits: Limits
    page_credit_deadline_s: float
    confirm_credit_deadline_s: float
    peer_deadline_s: float
    gate_refresh_s: float
    default_gate: GateConfig
    # payout_svc's admin address: the automatic release reads its channel statistics.
    payout_admin_addr: str
    # How often the automatic release looks at the channels (WITHDRAW_AUTO_RELEASE_INTERVAL_S).
    auto_release_interval_s: float
    # How long a user's methods list is cached (WITHDRAW_METHODS_CACHE_S); a bind invalidates
    # it at once (bound_methods.py), so this only bounds a bind whose version bump was lost.
    methods_cache_s: int
    relay_interval_s: float
    relay_batch: int
    relay_linger_s: float
    republish_after_s: int
    republish_check_s: float
    # Times the sweep may put one job back on its stream (WITHDRAW_REPUBLISH_CAP; 0: never).
    republish_cap: int
    refund_batch: int
    refund_max_backoff_s: int
    compensation_enabled: bool
    compensation_interval_s: float
    compensation_min_age_s: int
    compensation_concurrency: int
    stuck_bands_s: tuple[int, ...]
    stuck_check_interval_s: float
    deduct_resolve_after_s: int
    deduct_resolve_interval_s: float
    order_lock_ms: int
    payout_group: str
    db_pool_size: int
    # Confirms' deducts go to account_svc as DeductBatch calls: at most this many items
    # per call (capped at the ledger's 1000), this many calls in flight, and a batch waits
    # up to linger ms for company before it leaves.
    deduct_batch: int
    # Group-committed order writes (inserts, PENDING_DEDUCT -> PENDING_PAYOUT) in flight at
    # once, per kind (WITHDRAW_ORDER_WRITES_IN_FLIGHT).
    order_writes_in_flight: int
    deduct_in_flight: int
    deduct_linger_s: float
    # Confirms one uid may make per minute, shared by all replicas through Redis
    # (WITHDRAW_USER_CONFIRMS_PER_MIN; 0: no limit).
    user_confirms_per_min: int
    # Test-only: exit the process (as kill -9 would) just before the refund call.
    test_crash_before_refund: bool
    # Four-eyes admin changes (ADMIN_FOUR_EYES, MESH_ENV, ADMIN_CHANGE_TTL_S).
    four_eyes: FourEyesSettings = field(default_factory=FourEyesSettings)

    @classmethod
    def from_env(cls) -> Settings:
        channels = tuple(env_list("WITHDRAW_CHANNELS", ["bank", "alipay", "balance"]))
        return cls(
            common=CommonSettings.from_env("withdraw_svc", "withdraw", ADMITTED),
            account_addr=addr_of("account_svc"),
            gateway_addr=addr_of("gateway_mock"),
            limits=Limits(
                min_fen=env_int("WITHDRAW_MIN_FEN", 100),
                max_fen=env_int("WITHDRAW_MAX_FEN", 2_000_000),
                channels=channels,
            ),
            page_credit_deadline_s=env_int("WITHDRAW_PAGE_CREDIT_DEADLINE_MS", 200) / 1000.0,
            confirm_credit_deadline_s=env_int("WITHDRAW_CONFIRM_CREDIT_DEADLINE_MS", 2000) / 1000.0,
            peer_deadline_s=env_int("WITHDRAW_PEER_DEADLINE_MS", 3000) / 1000.0,
            gate_refresh_s=float(env_int("WITHDRAW_GATE_REFRESH_S", 2)),
            # The campaign window is set at run time by SetGate; until then the gate is open,
            # so a local mesh works at any hour.
            default_gate=GateConfig(
                timezone=env_str("WITHDRAW_GATE_TIMEZONE", DEFAULT_TIMEZONE),
                closed_start=env_str("WITHDRAW_GATE_CLOSED_START", ""),
                closed_end=env_str("WITHDRAW_GATE_CLOSED_END", ""),
                release_modulus=env_int("WITHDRAW_GATE_RELEASE_MODULUS", 1),
                release_k=env_int("WITHDRAW_GATE_RELEASE_K", 1),
            ),
            payout_admin_addr=admin_addr_of("payout_svc"),
            auto_release_interval_s=_positive("WITHDRAW_AUTO_RELEASE_INTERVAL_S",
                                              env_float("WITHDRAW_AUTO_RELEASE_INTERVAL_S", 10.0)),
            # Below the methods version's own lifetime (meshkit.redis_keys), so an expired
            # version can never match a list cached before it expired.
            methods_cache_s=min(METHODS_VERSION_TTL_S // 2, max(1, env_int("WITHDRAW_METHODS_CACHE_S", 300))),
            relay_interval_s=env_int("WITHDRAW_RELAY_INTERVAL_MS", 500) / 1000.0,
            relay_batch=env_int("WITHDRAW_RELAY_BATCH", 500),
            relay_linger_s=min(1000, max(0, env_int("WITHDRAW_RELAY_LINGER_MS", 20))) / 1000.0,
            republish_after_s=env_int("WITHDRAW_REPUBLISH_AFTER_S", 600),
            republish_check_s=float(env_int("WITHDRAW_REPUBLISH_CHECK_S", 30)),
            republish_cap=max(0, env_int("WITHDRAW_REPUBLISH_CAP", 1)),
            refund_batch=env_int("WITHDRAW_REFUND_BATCH", 100),
            refund_max_backoff_s=env_int("WITHDRAW_REFUND_MAX_BACKOFF_S", 300),
            compensation_enabled=env_bool("WITHDRAW_COMPENSATION_ENABLED", True),
            compensation_interval_s=float(env_int("WITHDRAW_COMPENSATION_INTERVAL_S", 3600)),
            compensation_min_age_s=env_int("WITHDRAW_COMPENSATION_MIN_AGE_S", 4 * 3600),
            compensation_concurrency=env_int("WITHDRAW_COMPENSATION_CONCURRENCY", 16),
            stuck_bands_s=_bands(env_list("WITHDRAW_STUCK_BANDS_S", ["600", "3600"])),
            stuck_check_interval_s=float(env_int("WITHDRAW_STUCK_CHECK_INTERVAL_S", 60)),
            # A confirm lasts seconds: one still PENDING_DEDUCT a minute on lost its replica
            # mid-flight (0 leaves such orders to the compensation job alone).
            deduct_resolve_after_s=env_int("WITHDRAW_DEDUCT_RESOLVE_AFTER_S", 60),
            deduct_resolve_interval_s=float(env_int("WITHDRAW_DEDUCT_RESOLVE_INTERVAL_S", 10)),
            order_lock_ms=env_int("WITHDRAW_ORDER_LOCK_MS", 60_000),
            payout_group=env_str("WITHDRAW_PAYOUT_GROUP", "payout"),
            db_pool_size=env_int("WITHDRAW_DB_POOL_SIZE", 10),
            deduct_batch=max(1, min(1000, env_int("WITHDRAW_DEDUCT_BATCH", 256))),
            order_writes_in_flight=max(1, env_int("WITHDRAW_ORDER_WRITES_IN_FLIGHT", 1)),
            deduct_in_flight=max(1, env_int("WITHDRAW_DEDUCT_IN_FLIGHT", 1)),
            deduct_linger_s=max(0, env_int("WITHDRAW_DEDUCT_LINGER_MS", 5)) / 1000.0,
            user_confirms_per_min=env_int("WITHDRAW_USER_CONFIRMS_PER_MIN", 10),
            test_crash_before_refund=env_bool("WITHDRAW_TEST_CRASH_BEFORE_REFUND", False),
            four_eyes=FourEyesSettings.from_env(),
            # Last: a mistyped setting above is reported before missing keys are.
            session_keys=session_keys_at_start(),
        )


def _bands(raw: list[str]) -> tuple[int, ...]:
    try:
        bands = tuple(sorted({int(b) for b in raw}))
    except ValueError as exc:
        raise SystemExit(f"WITHDRAW_STUCK_BANDS_S must be seconds, comma separated: {raw}") from exc
    if any(b < 0 for b in bands):
        raise SystemExit("WITHDRAW_STUCK_BANDS_S must not be negative")
    return bands


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise SystemExit(f"{name} must be a positive number of seconds, got {value}")
    return value
