-- Cheaper AuditEvents. Measured on the writer's batches, each `audit_ref` row (a heap tuple
-- and an index entry) cost about as much as a fifth of the event row, and every event of
-- Hearth's own had two rows that are single-valued for it: its one `subtype` (the
-- interaction) and its one `entity:identifier` (the X-Request-Id). A parameter with a single
-- value is now kept in columns here; several values still go to `audit_ref`. Searches look
-- at both. The stored text, and so the hash chain, is unchanged.
ALTER TABLE audit_event
    ADD COLUMN subtype_system   text COLLATE "C",
    ADD COLUMN subtype_code     text COLLATE "C",
    ADD COLUMN entity_id_system text COLLATE "C",
    ADD COLUMN entity_id_value  text COLLATE "C";
-- Request ids are looked up to find one request's events (server-made ones are time-ordered
-- UUIDs, so this index grows at its right edge). `subtype` is searched with a date or a
-- patient, whose indexes lead.
CREATE INDEX audit_event_entity_id ON audit_event (entity_id_value);

UPDATE audit_event e SET subtype_system = a.system, subtype_code = a.value
    FROM audit_ref a
    WHERE a.key = e.key AND a.param = 'subtype'
    AND e.key IN (SELECT key FROM audit_ref WHERE param = 'subtype' GROUP BY key HAVING count(*) = 1);
UPDATE audit_event e SET entity_id_system = a.system, entity_id_value = a.value
    FROM audit_ref a
    WHERE a.key = e.key AND a.param = 'entity:identifier'
    AND e.key IN (SELECT key FROM audit_ref WHERE param = 'entity:identifier' GROUP BY key HAVING count(*) = 1);
DELETE FROM audit_ref a USING audit_event e
    WHERE a.key = e.key AND ((a.param = 'subtype' AND e.subtype_code IS NOT NULL)
        OR (a.param = 'entity:identifier' AND e.entity_id_value IS NOT NULL));

-- A search's event names every patient it returned, so bodies often pass the 2 kB at which
-- PostgreSQL compresses; lz4 does that several times faster than the default pglz. Servers
-- built without lz4 keep pglz.
DO $$
BEGIN
    ALTER TABLE audit_event ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL;
END
$$;
