-- recon_svc schema: how far each feed has been read, projections built from the feeds
-- (never from other services' tables), the queue of orders to check, what was found, and
-- the daily reports. A feed page and its cursor are written in one transaction, and every
-- projection row is keyed by its source's own key, so a page read twice changes nothing.

CREATE TABLE IF NOT EXISTS feed_positions (
    feed        TEXT        PRIMARY KEY,
    cursor      TEXT        NOT NULL DEFAULT '',
    applied     BIGINT      NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Orders as the orchestrator reported them. The state only moves forward along the state
-- machine (state_rank); a second, different terminal state lands in conflict_state.
CREATE TABLE IF NOT EXISTS r_orders (
    order_id           TEXT        PRIMARY KEY,
    uid                BIGINT      NOT NULL,
    amount             BIGINT      NOT NULL,
    channel            TEXT        NOT NULL DEFAULT '',
    state              TEXT        NOT NULL,
    state_rank         SMALLINT    NOT NULL,
    conflict_state     TEXT        NOT NULL DEFAULT '',
    failure_reason     TEXT        NOT NULL DEFAULT '',
    created_at         TIMESTAMPTZ NOT NULL,   -- the orchestrator's clock
    updated_at         TIMESTAMPTZ NOT NULL,
    terminal_at        TIMESTAMPTZ,            -- feed commit time of the final transition
    seen_terminal_at   TIMESTAMPTZ,            -- when recon applied it
    checked_at         TIMESTAMPTZ,            -- last near-real-time verdict
    verdict            TEXT,                   -- ok | discrepancy
    self_check_due_at  TIMESTAMPTZ,
    self_checked_at    TIMESTAMPTZ,
    stuck_flagged      BOOLEAN     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS r_orders_created ON r_orders (created_at);
CREATE INDEX IF NOT EXISTS r_orders_open ON r_orders (created_at) WHERE state_rank < 3 AND NOT stuck_flagged;
CREATE INDEX IF NOT EXISTS r_orders_self_check ON r_orders (self_check_due_at)
    WHERE self_check_due_at IS NOT NULL;

-- Ledger entries, keyed by the ledger's own entry id. A VOID has no account (uid NULL).
CREATE TABLE IF NOT EXISTS r_entries (
    entry_id       BIGINT      PRIMARY KEY,
    uid            BIGINT,
    kind           TEXT        NOT NULL,
    amount         BIGINT      NOT NULL,
    order_id       TEXT        NOT NULL DEFAULT '',
    reward_id      TEXT        NOT NULL DEFAULT '',
    balance_after  BIGINT,
    created_at     TIMESTAMPTZ NOT NULL,
    applied_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS r_entries_order ON r_entries (order_id) WHERE order_id <> '';
CREATE INDEX IF NOT EXISTS r_entries_uid ON r_entries (uid, entry_id) WHERE uid IS NOT NULL;
CREATE INDEX IF NOT EXISTS r_entries_created ON r_entries (created_at);

-- Running ledger sums per account, maintained with r_entries in the same transaction;
-- `balance` is balance_after of the account's highest entry id (entries of one account are
-- serialized by its row lock, so a higher id is a later balance).
CREATE TABLE IF NOT EXISTS r_balances (
    uid            BIGINT      PRIMARY KEY,
    credits        BIGINT      NOT NULL DEFAULT 0,
    debits         BIGINT      NOT NULL DEFAULT 0,
    refunds        BIGINT      NOT NULL DEFAULT 0,
    balance        BIGINT      NOT NULL DEFAULT 0,
    last_entry_id  BIGINT      NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Only accounts that do not add up are in this index, so the continuous scan is cheap.
CREATE INDEX IF NOT EXISTS r_balances_off ON r_balances (updated_at)
    WHERE credits - debits + refunds <> balance;

-- Every payout change the gateway reported, keyed by its feed cursor: the history from
-- which double payouts show (a record reaches SUCCEEDED once; twice means paid twice).
CREATE TABLE IF NOT EXISTS r_payout_events (
    cursor      TEXT        PRIMARY KEY,
    order_id    TEXT        NOT NULL,
    payout_ref  TEXT        NOT NULL DEFAULT '',
    state       TEXT        NOT NULL,
    amount      BIGINT      NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS r_payout_events_order ON r_payout_events (order_id);

-- Payout records per (order, payout_ref); payout_ref is the gateway's record id when its
-- payload carries one, else '' (the gateway keys payouts by order id).
CREATE TABLE IF NOT EXISTS r_payouts (
    order_id        TEXT        NOT NULL,
    payout_ref      TEXT        NOT NULL DEFAULT '',
    uid             BIGINT      NOT NULL,
    channel         TEXT        NOT NULL DEFAULT '',
    amount          BIGINT      NOT NULL,
    state           TEXT        NOT NULL,
    state_rank      SMALLINT    NOT NULL,
    failure_reason  TEXT        NOT NULL DEFAULT '',
    paid_count      INT         NOT NULL DEFAULT 0,
    paid_sum        BIGINT      NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, payout_ref)
);
CREATE INDEX IF NOT EXISTS r_payouts_created ON r_payouts (created_at);

-- Orders (or orphan order ids) waiting for a verdict. `gen` changes whenever a new related
-- change pushes the check back, so a checker that took an older generation leaves the row.
CREATE TABLE IF NOT EXISTS r_checks (
    order_id  TEXT        PRIMARY KEY,
    due_at    TIMESTAMPTZ NOT NULL,
    gen       BIGINT      NOT NULL DEFAULT 1,
    first_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS r_checks_due ON r_checks (due_at);

-- What does not add up. `subject` is the order id, or `uid:<n>` / a totals name for
-- conservation findings; one row per (reason, subject, source) however often it is found.
CREATE TABLE IF NOT EXISTS discrepancies (
    id          BIGSERIAL   PRIMARY KEY,
    reason      TEXT        NOT NULL,
    subject     TEXT        NOT NULL,
    order_id    TEXT        NOT NULL DEFAULT '',
    uid         BIGINT      NOT NULL DEFAULT 0,
    detail      TEXT        NOT NULL,
    status      TEXT        NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'RESOLVED', 'ACCEPTED')),
    source      TEXT        NOT NULL CHECK (source IN ('realtime', 'self_check', 'daily')),
    note        TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT discrepancies_once UNIQUE (reason, subject, source),
    CONSTRAINT discrepancies_resolved_note CHECK (status = 'OPEN' OR note <> '')
);
CREATE INDEX IF NOT EXISTS discrepancies_order ON discrepancies (order_id) WHERE order_id <> '';
CREATE INDEX IF NOT EXISTS discrepancies_status ON discrepancies (status, id DESC);

CREATE TABLE IF NOT EXISTS daily_reports (
    date           DATE        PRIMARY KEY,
    orders         BIGINT      NOT NULL,
    discrepancies  INT         NOT NULL,
    report         JSONB       NOT NULL,
    text           TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
