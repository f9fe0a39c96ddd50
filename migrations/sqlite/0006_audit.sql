-- The tamper-evident chain over AuditEvents (see migrations/postgres for the commented
-- original).
CREATE TABLE audit_chain (
    key      INTEGER PRIMARY KEY,
    recorded INTEGER NOT NULL,
    seq      INTEGER UNIQUE,
    prev     TEXT,
    hash     TEXT
);

CREATE INDEX audit_chain_unsealed ON audit_chain (key) WHERE seq IS NULL;

CREATE INDEX resource_version_newest_clinical ON resource_version (last_updated DESC, seq DESC)
    WHERE type <> 'AuditEvent';
