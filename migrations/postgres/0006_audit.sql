-- The tamper-evident chain over AuditEvents. Every AuditEvent resource gets a row here in
-- the transaction that creates it (seq and hashes NULL). A single sealer (under an advisory
-- lock) then gives each unsealed row the next position in the chain and
--   hash = SHA-256(prev || the stored body's text),
-- so that changing, removing or reordering a stored event breaks the chain at that point.
-- `recorded` (AuditEvent.recorded, Unix milliseconds) drives retention.
CREATE TABLE audit_chain (
    key      bigint PRIMARY KEY,
    recorded bigint NOT NULL,
    seq      bigint UNIQUE,
    prev     text,
    hash     text
);

CREATE INDEX audit_chain_unsealed ON audit_chain (key) WHERE seq IS NULL;

-- System-level history leaves the audit trail out (see store::history): its own index.
CREATE INDEX resource_version_newest_clinical ON resource_version (last_updated DESC, seq DESC)
    WHERE type <> 'AuditEvent';
