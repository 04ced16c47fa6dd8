-- Leases (meshkit/leader.py): which replica runs a job that must run once across them.
-- A row per job; the holder renews it before expires_at (the database's clock, so replicas'
-- clocks never disagree about it), and any replica may take it once it has expired.
-- A row, not a session advisory lock: it works through a transaction-pooling PgBouncer.
-- Created in every schema; services without single-runner jobs leave it empty.
CREATE TABLE IF NOT EXISTS leases (
    name        TEXT        PRIMARY KEY CHECK (name <> ''),
    holder      TEXT        NOT NULL CHECK (holder <> ''),
    expires_at  TIMESTAMPTZ NOT NULL,
    -- Grows by one each time the lease changes hands: who held which term, for logs.
    epoch       BIGINT      NOT NULL DEFAULT 1
);
