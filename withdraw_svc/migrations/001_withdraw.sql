-- withdraw_svc schema: orders and their history, the transactional outbox (payout and
-- refund jobs), and the gate configuration with its audit.
--
-- The money rules live in the database, so no code path (or hand-written SQL) can break them:
--   * orders_guard (BEFORE UPDATE): only the transitions of the state machine; terminal states
--     never change; an order's uid, amount, method and request id never change.
--   * orders_record (AFTER INSERT/UPDATE OF state): every transition appends to order_history
--     and to the change feed; a move to FAILED writes its REFUND job; leaving PENDING_PAYOUT
--     closes the PAYOUT job. All in the same transaction as the transition.

CREATE TABLE IF NOT EXISTS orders (
    order_id        TEXT        PRIMARY KEY,
    uid             BIGINT      NOT NULL CHECK (uid > 0),
    request_id      TEXT        NOT NULL CHECK (length(request_id) BETWEEN 1 AND 64),
    amount_fen      BIGINT      NOT NULL CHECK (amount_fen > 0),
    channel         TEXT        NOT NULL,
    method_id       TEXT        NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN
                        ('PENDING_DEDUCT', 'PENDING_PAYOUT', 'PAYING', 'SUCCEEDED', 'FAILED')),
    state_reason    TEXT        NOT NULL DEFAULT '',
    failure_reason  TEXT        NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT orders_uid_request_id UNIQUE (uid, request_id),
    CONSTRAINT orders_failure_reason CHECK ((state = 'FAILED') = (failure_reason <> ''))
);
-- The compensation job and the early warning scan only non-terminal orders by age.
CREATE INDEX IF NOT EXISTS orders_open_by_age ON orders (state, created_at)
    WHERE state IN ('PENDING_DEDUCT', 'PENDING_PAYOUT', 'PAYING');
-- A user's history, newest first (ListOrders cursor is (created_at, order_id)).
CREATE INDEX IF NOT EXISTS orders_uid_created ON orders (uid, created_at DESC, order_id DESC);

CREATE TABLE IF NOT EXISTS order_history (
    id          BIGSERIAL   PRIMARY KEY,
    order_id    TEXT        NOT NULL REFERENCES orders (order_id),
    from_state  TEXT,
    to_state    TEXT        NOT NULL,
    reason      TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS order_history_order ON order_history (order_id, id);

-- One PAYOUT job and at most one REFUND job per order (UNIQUE (kind, order_id)).
CREATE TABLE IF NOT EXISTS outbox (
    id               BIGSERIAL   PRIMARY KEY,
    kind             TEXT        NOT NULL CHECK (kind IN ('PAYOUT', 'REFUND')),
    order_id         TEXT        NOT NULL REFERENCES orders (order_id),
    payload          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at     TIMESTAMPTZ,
    stream_id        TEXT,
    done_at          TIMESTAMPTZ,
    outcome          TEXT        CHECK (outcome IN ('DONE', 'REFUNDED', 'VOIDED')),
    attempts         INT         NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_error       TEXT        NOT NULL DEFAULT '',
    CONSTRAINT outbox_kind_order UNIQUE (kind, order_id),
    CONSTRAINT outbox_done_has_outcome CHECK ((done_at IS NULL) = (outcome IS NULL)),
    CONSTRAINT outbox_outcome_kind CHECK (
        outcome IS NULL OR (kind = 'PAYOUT') = (outcome = 'DONE'))
);
CREATE INDEX IF NOT EXISTS outbox_payout_unpublished ON outbox (id)
    WHERE kind = 'PAYOUT' AND published_at IS NULL AND done_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_payout_in_flight ON outbox (published_at)
    WHERE kind = 'PAYOUT' AND published_at IS NOT NULL AND done_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_refund_open ON outbox (id)
    WHERE kind = 'REFUND' AND done_at IS NULL;

CREATE TABLE IF NOT EXISTS gate_config (
    id          INT         PRIMARY KEY CHECK (id = 1),
    config      JSONB       NOT NULL,
    version     BIGINT      NOT NULL CHECK (version >= 1),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS gate_audit (
    id           BIGSERIAL   PRIMARY KEY,
    actor        TEXT        NOT NULL,
    old_config   JSONB,
    new_config   JSONB       NOT NULL,
    old_version  BIGINT,
    new_version  BIGINT      NOT NULL,
    reason       TEXT        NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- search_path is pinned to this schema at creation, so the triggers work for any session.
CREATE OR REPLACE FUNCTION orders_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.order_id IS DISTINCT FROM OLD.order_id OR NEW.uid IS DISTINCT FROM OLD.uid
       OR NEW.request_id IS DISTINCT FROM OLD.request_id
       OR NEW.amount_fen IS DISTINCT FROM OLD.amount_fen
       OR NEW.channel IS DISTINCT FROM OLD.channel OR NEW.method_id IS DISTINCT FROM OLD.method_id
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'order %: only its state may change', OLD.order_id
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.state IN ('SUCCEEDED', 'FAILED') THEN
        IF NEW.state IS DISTINCT FROM OLD.state
           OR NEW.failure_reason IS DISTINCT FROM OLD.failure_reason THEN
            RAISE EXCEPTION 'order % is % (terminal) and cannot change', OLD.order_id, OLD.state
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        IF NOT ((OLD.state = 'PENDING_DEDUCT' AND NEW.state IN ('PENDING_PAYOUT', 'FAILED'))
             OR (OLD.state = 'PENDING_PAYOUT' AND NEW.state IN ('PAYING', 'FAILED'))
             OR (OLD.state = 'PAYING' AND NEW.state IN ('SUCCEEDED', 'FAILED'))) THEN
            RAISE EXCEPTION 'order %: transition % -> % is not allowed', OLD.order_id, OLD.state, NEW.state
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION orders_record() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    from_state TEXT := CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END;
BEGIN
    INSERT INTO order_history (order_id, from_state, to_state, reason)
    VALUES (NEW.order_id, from_state, NEW.state, NEW.state_reason);
    INSERT INTO changes (kind, key, payload)
    VALUES ('order', NEW.order_id, jsonb_build_object(
        'order_id', NEW.order_id, 'uid', NEW.uid, 'request_id', NEW.request_id,
        'amount_fen', NEW.amount_fen, 'channel', NEW.channel, 'method_id', NEW.method_id,
        'from_state', from_state, 'state', NEW.state, 'reason', NEW.state_reason,
        'failure_reason', NEW.failure_reason,
        'created_at', NEW.created_at, 'updated_at', NEW.updated_at));
    IF NEW.state = 'FAILED' THEN
        -- The refund this failure owes, in the same transaction. Refund of an order without
        -- a debit voids its id at the ledger, so a late debit can never land either.
        INSERT INTO outbox (kind, order_id) VALUES ('REFUND', NEW.order_id)
        ON CONFLICT (kind, order_id) DO NOTHING;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state = 'PENDING_PAYOUT' THEN
        UPDATE outbox SET done_at = now(), outcome = 'DONE'
        WHERE kind = 'PAYOUT' AND order_id = NEW.order_id AND done_at IS NULL;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'check_violation';
END
$$;

DROP TRIGGER IF EXISTS orders_guard ON orders;
CREATE TRIGGER orders_guard BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_guard();
DROP TRIGGER IF EXISTS orders_record_insert ON orders;
CREATE TRIGGER orders_record_insert AFTER INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_record();
DROP TRIGGER IF EXISTS orders_record_update ON orders;
CREATE TRIGGER orders_record_update AFTER UPDATE OF state ON orders
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION orders_record();
DROP TRIGGER IF EXISTS order_history_append_only ON order_history;
CREATE TRIGGER order_history_append_only BEFORE UPDATE OR DELETE ON order_history
    FOR EACH ROW EXECUTE FUNCTION append_only();
DROP TRIGGER IF EXISTS gate_audit_append_only ON gate_audit;
CREATE TRIGGER gate_audit_append_only BEFORE UPDATE OR DELETE ON gate_audit
    FOR EACH ROW EXECUTE FUNCTION append_only();
DROP TRIGGER IF EXISTS orders_no_delete ON orders;
CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION append_only();
