-- A PAYOUT job now stays open (done_at NULL) until its order is SUCCEEDED or FAILED, not
-- only until it leaves PENDING_PAYOUT. A PAYING order may be followed only in Redis (a
-- message in hand, an asynchronous answer awaited): after a wipe, or when that follow-up
-- is lost, its open job is what brings it back. So "every open order with nothing waiting
-- on it" is one index range (outbox_payout_sweep), for the wipe and for the sweep alike,
-- however many wipes come in a row. A worker that meets a PAYING order asks the gateway
-- before anything else, so a republished job can never pay twice.
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
    IF TG_OP = 'UPDATE' AND NEW.state IN ('SUCCEEDED', 'FAILED') THEN
        UPDATE outbox SET done_at = now(), outcome = 'DONE'
        WHERE kind = 'PAYOUT' AND order_id = NEW.order_id AND done_at IS NULL;
    END IF;
    RETURN NULL;
END
$$;

-- Jobs of PAYING orders closed under the old rule are open again (published as they were:
-- the sweep looks at them like any other job in flight). Bounded by the open orders.
UPDATE outbox j SET done_at = NULL, outcome = NULL
FROM orders o
WHERE o.state = 'PAYING' AND j.kind = 'PAYOUT' AND j.order_id = o.order_id AND j.done_at IS NOT NULL;

-- How often the sweep put the job back on its stream (capped by WITHDRAW_REPUBLISH_CAP).
-- The claim is a compare-and-set on this counter, so two relays never both republish.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS republished INT NOT NULL DEFAULT 0;

-- The sweep pages through jobs in flight by (published_at, id), from where its last pass
-- stopped; the wipe re-opens the jobs published before it noticed. Both read only jobs in
-- flight, never the history of done ones.
CREATE INDEX IF NOT EXISTS outbox_payout_sweep ON outbox (published_at, id)
    WHERE kind = 'PAYOUT' AND published_at IS NOT NULL AND done_at IS NULL;
DROP INDEX IF EXISTS outbox_payout_in_flight;
