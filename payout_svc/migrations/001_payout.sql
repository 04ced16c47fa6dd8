-- Per-channel payout rates. PostgreSQL is the truth: Redis (where the limiter state
-- lives) may be wiped, the configured rates must survive it.
CREATE TABLE IF NOT EXISTS channel_config (
    channel          TEXT             PRIMARY KEY,
    rate_per_second  DOUBLE PRECISION NOT NULL CHECK (rate_per_second >= 0),
    updated_at       TIMESTAMPTZ      NOT NULL DEFAULT now()
);
