-- The audit trail's own append-only table (see migrations/postgres for the commented
-- original).
CREATE TABLE audit_event (
    key          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    recorded     INTEGER NOT NULL,
    recorded_hi  INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    type_system  TEXT,
    type_code    TEXT,
    action       TEXT,
    outcome      TEXT,
    body         TEXT NOT NULL
);
CREATE INDEX audit_event_recorded ON audit_event (recorded, key);

CREATE TABLE audit_ref (
    key    INTEGER NOT NULL,
    param  TEXT NOT NULL,
    system TEXT,
    value  TEXT NOT NULL
);
CREATE INDEX audit_ref_value ON audit_ref (param, value, key);
