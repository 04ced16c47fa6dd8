-- The gate's automatic release (GateConfig.auto_release, auto_release_drain_seconds,
-- auto_release_step). The config is one JSONB row: the stored config gets the new keys
-- with their "off" values, so it says explicitly that it does not release by itself. One
-- row: no table scan.
UPDATE gate_config
SET config = jsonb_build_object('auto_release', false, 'auto_release_drain_seconds', 0,
                                'auto_release_step', 1) || config
WHERE id = 1 AND NOT (config ? 'auto_release');

-- The database refuses what validate_gate refuses. A config without the keys stays
-- acceptable (it reads as "off"): a replica not yet upgraded, mid rolling upgrade, must
-- still be able to write the gate.
ALTER TABLE gate_config DROP CONSTRAINT IF EXISTS gate_config_auto_release;
ALTER TABLE gate_config ADD CONSTRAINT gate_config_auto_release CHECK (
    NOT (config ? 'auto_release')
    OR (
        jsonb_typeof(config -> 'auto_release') = 'boolean'
        AND jsonb_typeof(config -> 'auto_release_drain_seconds') = 'number'
        AND jsonb_typeof(config -> 'auto_release_step') = 'number'
        AND (config ->> 'auto_release_step')::numeric >= 1
        AND (config ->> 'auto_release_drain_seconds')::numeric BETWEEN 0 AND 86400
        AND (NOT (config ->> 'auto_release')::boolean
             OR (config ->> 'auto_release_drain_seconds')::numeric >= 1)
    )
);
