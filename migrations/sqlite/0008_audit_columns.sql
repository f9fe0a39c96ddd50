-- A parameter with a single value (an event's one subtype, its one X-Request-Id identifier)
-- is kept in columns of audit_event instead of audit_ref rows (see migrations/postgres for
-- the commented original).
ALTER TABLE audit_event ADD COLUMN subtype_system TEXT;
ALTER TABLE audit_event ADD COLUMN subtype_code TEXT;
ALTER TABLE audit_event ADD COLUMN entity_id_system TEXT;
ALTER TABLE audit_event ADD COLUMN entity_id_value TEXT;
CREATE INDEX audit_event_entity_id ON audit_event (entity_id_value);

UPDATE audit_event SET
    subtype_system = (SELECT a.system FROM audit_ref a WHERE a.key = audit_event.key AND a.param = 'subtype'),
    subtype_code = (SELECT a.value FROM audit_ref a WHERE a.key = audit_event.key AND a.param = 'subtype')
    WHERE key IN (SELECT key FROM audit_ref WHERE param = 'subtype' GROUP BY key HAVING count(*) = 1);
UPDATE audit_event SET
    entity_id_system = (SELECT a.system FROM audit_ref a WHERE a.key = audit_event.key AND a.param = 'entity:identifier'),
    entity_id_value = (SELECT a.value FROM audit_ref a WHERE a.key = audit_event.key AND a.param = 'entity:identifier')
    WHERE key IN (SELECT key FROM audit_ref WHERE param = 'entity:identifier' GROUP BY key HAVING count(*) = 1);
DELETE FROM audit_ref WHERE
    (param = 'subtype' AND key IN (SELECT key FROM audit_event WHERE subtype_code IS NOT NULL))
    OR (param = 'entity:identifier' AND key IN (SELECT key FROM audit_event WHERE entity_id_value IS NOT NULL));
