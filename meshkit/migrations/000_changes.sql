-- The change feed of this schema: written in the same transaction as the change it
-- describes. xid orders rows by transaction so a reader can skip nothing (see changefeed.py).
CREATE TABLE IF NOT EXISTS changes (
    id          BIGSERIAL PRIMARY KEY,
    xid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    kind        TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    payload     JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS changes_xid_id ON changes (xid, id);
