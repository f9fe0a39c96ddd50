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

-- The hash chain, split in two so that sealing never updates a row: `audit_queue` holds the
-- events waiting for the sealer (inserted with each event, deleted once linked), and
-- `audit_link` the chain itself (one row per sealed event, inserted by the sealer).
CREATE TABLE audit_link (
    seq      INTEGER PRIMARY KEY,
    key      INTEGER NOT NULL,
    recorded INTEGER NOT NULL,
    prev     TEXT NOT NULL,
    hash     TEXT NOT NULL
);
CREATE TABLE audit_queue (
    key      INTEGER PRIMARY KEY,
    recorded INTEGER NOT NULL
);
INSERT INTO audit_link (seq, key, recorded, prev, hash)
    SELECT seq, key, recorded, prev, hash FROM audit_chain WHERE seq IS NOT NULL;
INSERT INTO audit_queue (key, recorded) SELECT key, recorded FROM audit_chain WHERE seq IS NULL;
DROP TABLE audit_chain;
