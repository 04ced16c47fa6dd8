-- A PAYING order whose gateway answer is pending is followed only in Redis (payout_svc's
-- awaiting set). After a Redis wipe the relay re-opens its PAYOUT job, so the job is now
-- closed when the order leaves PAYING too, not only PENDING_PAYOUT.
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
    IF TG_OP = 'UPDATE' AND OLD.state IN ('PENDING_PAYOUT', 'PAYING') THEN
        UPDATE outbox SET done_at = now(), outcome = 'DONE'
        WHERE kind = 'PAYOUT' AND order_id = NEW.order_id AND done_at IS NULL;
    END IF;
    RETURN NULL;
END
$$;
