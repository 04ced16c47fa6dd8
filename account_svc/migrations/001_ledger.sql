-- The activity income ledger. Every money rule that can be a constraint is one: the code
-- above it may race, retry or crash, and these still hold.

CREATE TABLE IF NOT EXISTS accounts (
    uid         BIGINT      PRIMARY KEY CHECK (uid > 0),
    -- A balance never goes negative, whatever the concurrency: debits are one conditional
    -- UPDATE, and this CHECK stops anything that gets past it.
    balance     BIGINT      NOT NULL CHECK (balance >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Append-only. A VOID moves no money and belongs to no account: it marks an order id that
-- was refunded before any debit existed, so a late debit for it can never land.
CREATE TABLE IF NOT EXISTS entries (
    entry_id       BIGSERIAL   PRIMARY KEY,
    uid            BIGINT,
    kind           TEXT        NOT NULL CHECK (kind IN ('CREDIT', 'DEBIT', 'REFUND', 'VOID')),
    amount         BIGINT      NOT NULL,
    reward_id      TEXT,
    source         TEXT,
    order_id       TEXT,
    -- The debit a refund gives back. No FOREIGN KEY: the trigger below checks more (that
    -- it is a DEBIT with the same uid, amount and order) and only for refunds, where an
    -- FK check would run for every one of the millions of credits too.
    refund_of      BIGINT,
    balance_after  BIGINT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT entries_amount CHECK (
        (kind = 'VOID' AND amount = 0) OR (kind <> 'VOID' AND amount > 0)),
    CONSTRAINT entries_account CHECK (
        ((kind = 'VOID') = (uid IS NULL)) AND ((kind = 'VOID') = (balance_after IS NULL))),
    CONSTRAINT entries_balance_after CHECK (balance_after >= 0),
    -- Which business key each kind carries, and only that one.
    CONSTRAINT entries_keys CHECK (
        CASE kind
            WHEN 'CREDIT' THEN reward_id IS NOT NULL AND order_id IS NULL AND refund_of IS NULL
            WHEN 'DEBIT'  THEN order_id IS NOT NULL AND reward_id IS NULL AND refund_of IS NULL
            WHEN 'REFUND' THEN order_id IS NOT NULL AND reward_id IS NULL AND refund_of IS NOT NULL
            WHEN 'VOID'   THEN order_id IS NOT NULL AND reward_id IS NULL AND refund_of IS NULL
        END)
);

-- One credit per reward id, whichever path (bulk or forced) gets there first.
CREATE UNIQUE INDEX IF NOT EXISTS entries_credit_reward ON entries (reward_id) WHERE kind = 'CREDIT';
-- One debit-or-void per order id: a debit and a void of the same order exclude each other.
CREATE UNIQUE INDEX IF NOT EXISTS entries_debit_order ON entries (order_id) WHERE kind IN ('DEBIT', 'VOID');
-- One refund per debit (refund_of) and per order id. Partial, so the millions of credits
-- (refund_of NULL) carry no entry in it.
CREATE UNIQUE INDEX IF NOT EXISTS entries_refund_of ON entries (refund_of) WHERE refund_of IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS entries_refund_order ON entries (order_id) WHERE kind = 'REFUND';
-- The bill: a user's entries newest first, paged by entry id.
CREATE INDEX IF NOT EXISTS entries_uid_entry ON entries (uid, entry_id DESC) WHERE uid IS NOT NULL;

-- A refund gives back exactly its debit: same account, same amount, same order.
CREATE OR REPLACE FUNCTION entries_check_refund() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM entries d
     WHERE d.entry_id = NEW.refund_of AND d.kind = 'DEBIT'
       AND d.uid = NEW.uid AND d.amount = NEW.amount AND d.order_id = NEW.order_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund % does not mirror debit %', NEW.order_id, NEW.refund_of
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER entries_refund_mirrors_debit
    BEFORE INSERT ON entries FOR EACH ROW WHEN (NEW.kind = 'REFUND')
    EXECUTE FUNCTION entries_check_refund();

-- The ledger is append-only: a correction is a new entry, never an edit.
CREATE OR REPLACE FUNCTION entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER entries_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON entries FOR EACH STATEMENT
    EXECUTE FUNCTION entries_refuse_change();
