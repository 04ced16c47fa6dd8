-- "No limit" is said explicitly: a channel is unlimited only with unlimited = true. A
-- rate of 0 (or no row at all) now means paused: no gateway calls.
ALTER TABLE channel_config ADD COLUMN IF NOT EXISTS unlimited BOOLEAN NOT NULL DEFAULT false;
-- Rows written while 0 meant unlimited keep the meaning they were written with.
UPDATE channel_config SET unlimited = true WHERE rate_per_second = 0 AND NOT unlimited;
ALTER TABLE channel_config DROP CONSTRAINT IF EXISTS channel_config_unlimited_has_no_rate;
ALTER TABLE channel_config ADD CONSTRAINT channel_config_unlimited_has_no_rate
    CHECK (NOT unlimited OR rate_per_second = 0);
