-- A finding is stored only when a second look, one grace window later, still sees it: a
-- change held back in a peer's feed (behind a long transaction) gets that long to arrive.
ALTER TABLE r_checks ADD COLUMN IF NOT EXISTS confirming BOOLEAN NOT NULL DEFAULT false;
