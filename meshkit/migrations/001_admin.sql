-- Admin actions of this schema's service: the audit of every one (who, when, old -> new),
-- written in the same transaction as the change, and the four-eyes proposals that a
-- second operator approves. Created in every schema; services without admin RPCs leave
-- them empty.
CREATE TABLE IF NOT EXISTS admin_audit (
    id        BIGSERIAL   PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor     TEXT        NOT NULL CHECK (actor <> ''),
    action    TEXT        NOT NULL CHECK (action <> ''),
    target    TEXT        NOT NULL DEFAULT '',
    old_json  JSONB,
    new_json  JSONB,
    reason    TEXT        NOT NULL DEFAULT ''
);

CREATE OR REPLACE FUNCTION admin_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_audit is append-only' USING ERRCODE = 'check_violation';
END
$$;
DROP TRIGGER IF EXISTS admin_audit_append_only ON admin_audit;
CREATE TRIGGER admin_audit_append_only BEFORE UPDATE OR DELETE ON admin_audit
    FOR EACH ROW EXECUTE FUNCTION admin_audit_append_only();

-- A proposal keeps the full request (payload) it will apply. Who decided it, and how, is
-- constrained here and not only in Python: nobody approves their own change, an applied
-- change names its approver, and a decided change never changes again (trigger below).
CREATE TABLE IF NOT EXISTS admin_changes (
    id               BIGSERIAL   PRIMARY KEY,
    change_id        TEXT        NOT NULL UNIQUE,
    kind             TEXT        NOT NULL CHECK (kind <> ''),
    target           TEXT        NOT NULL DEFAULT '',
    payload          JSONB       NOT NULL,
    reason           TEXT        NOT NULL DEFAULT '',
    proposer         TEXT        NOT NULL CHECK (proposer <> ''),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    state            TEXT        NOT NULL DEFAULT 'PROPOSED'
                     CHECK (state IN ('PROPOSED', 'APPLIED', 'REJECTED', 'EXPIRED')),
    decided_by       TEXT,
    decided_at       TIMESTAMPTZ,
    decision_reason  TEXT        NOT NULL DEFAULT '',
    CONSTRAINT admin_changes_expiry CHECK (expires_at > created_at),
    CONSTRAINT admin_changes_four_eyes CHECK (state <> 'APPLIED' OR decided_by <> proposer),
    CONSTRAINT admin_changes_decided CHECK (
        (state IN ('APPLIED', 'REJECTED')) = (decided_by IS NOT NULL AND decided_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS admin_changes_kind_id ON admin_changes (kind, id);

CREATE OR REPLACE FUNCTION admin_changes_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'PROPOSED' THEN
        RAISE EXCEPTION 'change % is % and cannot change', OLD.change_id, OLD.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.change_id IS DISTINCT FROM OLD.change_id OR NEW.kind IS DISTINCT FROM OLD.kind
       OR NEW.target IS DISTINCT FROM OLD.target OR NEW.payload IS DISTINCT FROM OLD.payload
       OR NEW.reason IS DISTINCT FROM OLD.reason OR NEW.proposer IS DISTINCT FROM OLD.proposer
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'change %: only its decision may change', OLD.change_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS admin_changes_guard ON admin_changes;
CREATE TRIGGER admin_changes_guard BEFORE UPDATE ON admin_changes
    FOR EACH ROW EXECUTE FUNCTION admin_changes_guard();
DROP TRIGGER IF EXISTS admin_changes_no_delete ON admin_changes;
CREATE TRIGGER admin_changes_no_delete BEFORE DELETE ON admin_changes
    FOR EACH ROW EXECUTE FUNCTION admin_audit_append_only();
