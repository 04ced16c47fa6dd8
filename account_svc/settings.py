"""Configuration of account_svc, read once at start."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from campaign.partitions import DEFAULT_PARTITIONS, checked_partitions
from campaign.tokens import DEFAULT_KEYS, DEFAULT_MAX_AGE_S, parse_keys
from edge.sessions import SessionKeys
from meshkit.secrets import key_ring
from meshkit.settings import CommonSettings, addr_of, env_bool, env_int, env_str
from meshkit.user_auth import session_keys_at_start


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    # Verify the session tokens of GetBalance and ListEntries (SESSION_TOKEN_KEYS; meshkit.user_auth).
    session_keys: SessionKeys
    # Secrets that verify reward tokens, by key id (REWARD_TOKEN_KEYS="k1:s1,k2:s2"). Every
    # key listed verifies, so a key being rotated out still verifies the tokens it signed.
    token_keys: Mapping[str, bytes]
    # Tokens older than this credit nothing (REWARD_TOKEN_MAX_AGE_S, default 7 days).
    token_max_age_s: int
    # PostgreSQL connections of this process (ACCOUNT_DB_POOL_SIZE).
    pool_size: int
    # Bulk credit: consumers in this process (ACCOUNT_CREDIT_WORKERS, 0 disables the ingest
    # consumer); database statements each runs at once per batch, on disjoint uid
    # partitions (ACCOUNT_CREDIT_WRITERS); rewards per batch; how long one read blocks.
    credit_workers: int
    # Partitions of the ingest stream (ACCOUNT_CREDIT_PARTITIONS, campaign.partitions): every
    # consumer reads all of them; producers must use the same number.
    credit_partitions: int
    credit_writers: int
    credit_batch: int
    credit_block_ms: int
    # A message pending this long on another consumer is taken over: that consumer died.
    credit_claim_idle_ms: int
    # Consumer name prefix, unique per process so replicas never share a pending list.
    consumer_name: str
    # Refund only orders withdraw_svc says are FAILED (ACCOUNT_REFUND_CHECKS_ORDER, default
    # on), asked at withdraw_svc's address within the peer deadline.
    refund_checks_order: bool
    withdraw_addr: str
    peer_deadline_s: float
    # Forced credits (ForceCredit with tokens: the page's and the confirm's) one uid may
    # make per minute, across replicas (ACCOUNT_USER_CREDITS_PER_MIN; 0: no limit).
    user_credits_per_min: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        keys = key_ring("REWARD_TOKEN_KEYS", env.get("REWARD_TOKEN_KEYS", ""), parse_keys, DEFAULT_KEYS, env)
        default_consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        return cls(
            common=CommonSettings.from_env("account_svc", "account"),
            token_keys=keys,
            token_max_age_s=env_int("REWARD_TOKEN_MAX_AGE_S", DEFAULT_MAX_AGE_S),
            pool_size=env_int("ACCOUNT_DB_POOL_SIZE", 10),
            credit_workers=env_int("ACCOUNT_CREDIT_WORKERS", 1),
            credit_partitions=_partitions(env_int("ACCOUNT_CREDIT_PARTITIONS", DEFAULT_PARTITIONS)),
            credit_writers=env_int("ACCOUNT_CREDIT_WRITERS", 2),
            credit_batch=env_int("ACCOUNT_CREDIT_BATCH", 500),
            credit_block_ms=env_int("ACCOUNT_CREDIT_BLOCK_MS", 1000),
            credit_claim_idle_ms=env_int("ACCOUNT_CREDIT_CLAIM_IDLE_MS", 30_000),
            consumer_name=env_str("ACCOUNT_CONSUMER_NAME", default_consumer),
            refund_checks_order=env_bool("ACCOUNT_REFUND_CHECKS_ORDER", True),
            withdraw_addr=addr_of("withdraw_svc"),
            peer_deadline_s=env_int("ACCOUNT_PEER_DEADLINE_MS", 3000) / 1000.0,
            user_credits_per_min=env_int("ACCOUNT_USER_CREDITS_PER_MIN", 30),
            # Last: a mistyped setting above is reported before missing keys are.
            session_keys=session_keys_at_start(env),
        )


def _partitions(count: int) -> int:
    try:
        return checked_partitions(count)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
