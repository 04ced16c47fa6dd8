-- Payouts: one per order id, ever. The primary key is what makes Payout idempotent even
-- when two calls for the same order race.
CREATE TABLE IF NOT EXISTS payouts (
    order_id        TEXT        PRIMARY KEY,
    uid             BIGINT      NOT NULL CHECK (uid > 0),
    channel         TEXT        NOT NULL,
    method_id       TEXT        NOT NULL,
    amount_fen      BIGINT      NOT NULL CHECK (amount_fen > 0),
    state           TEXT        NOT NULL CHECK (state IN ('PROCESSING', 'SUCCEEDED', 'FAILED')),
    failure_reason  TEXT        NOT NULL DEFAULT '',
    -- For asynchronous payouts: when and how they complete (decided at acceptance, so
    -- whoever finalizes the row, before or after a restart, adopts the same outcome).
    complete_at     TIMESTAMPTZ,
    async_outcome   TEXT        CHECK (async_outcome IN ('SUCCEEDED', 'FAILED')),
    async_reason    TEXT        NOT NULL DEFAULT '',
    requested_at    TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at    TIMESTAMPTZ,
    CHECK (state <> 'PROCESSING' OR (complete_at IS NOT NULL AND async_outcome IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS payouts_created ON payouts (created_at, order_id);
CREATE INDEX IF NOT EXISTS payouts_processing_due ON payouts (complete_at) WHERE state = 'PROCESSING';

CREATE TABLE IF NOT EXISTS methods (
    method_id       TEXT        PRIMARY KEY,
    uid             BIGINT      NOT NULL CHECK (uid > 0),
    channel         TEXT        NOT NULL,
    account_masked  TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS methods_uid ON methods (uid);

CREATE TABLE IF NOT EXISTS channel_faults (
    channel     TEXT        PRIMARY KEY,
    config      JSONB       NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
