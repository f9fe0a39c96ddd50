-- See migrations/postgres/0002_search_index.sql for the commented original.
-- Search index rows, extracted from each resource's current version at write time and
-- written in the same transaction. `key` is resource.key; `type` repeats the resource type so
-- that every lookup starts from (type, param, value). Dates are [lo, hi) in microseconds
-- since the Unix epoch. Deleted resources have no rows.
CREATE TABLE search_string (
    key    INTEGER NOT NULL,
    type   TEXT NOT NULL,
    param  TEXT NOT NULL,
    folded TEXT NOT NULL,
    exact  TEXT NOT NULL
);
CREATE INDEX search_string_value ON search_string (type, param, folded, key);
CREATE INDEX search_string_key ON search_string (key);

CREATE TABLE search_token (
    key    INTEGER NOT NULL,
    type   TEXT NOT NULL,
    param  TEXT NOT NULL,
    system TEXT,
    code   TEXT,
    text   TEXT
);
CREATE INDEX search_token_value ON search_token (type, param, code, system, key);
CREATE INDEX search_token_key ON search_token (key);

CREATE TABLE search_date (
    key   INTEGER NOT NULL,
    type  TEXT NOT NULL,
    param TEXT NOT NULL,
    lo    INTEGER NOT NULL,
    hi    INTEGER NOT NULL
);
CREATE INDEX search_date_value ON search_date (type, param, lo, hi, key);
CREATE INDEX search_date_key ON search_date (key);

CREATE TABLE search_number (
    key   INTEGER NOT NULL,
    type  TEXT NOT NULL,
    param TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX search_number_value ON search_number (type, param, value, key);
CREATE INDEX search_number_key ON search_number (key);

CREATE TABLE search_quantity (
    key    INTEGER NOT NULL,
    type   TEXT NOT NULL,
    param  TEXT NOT NULL,
    value  REAL NOT NULL,
    system TEXT,
    code   TEXT,
    unit   TEXT
);
CREATE INDEX search_quantity_value ON search_quantity (type, param, value, key);
CREATE INDEX search_quantity_key ON search_quantity (key);

CREATE TABLE search_reference (
    key         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    param       TEXT NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    url         TEXT
);
CREATE INDEX search_reference_value ON search_reference (type, param, target_id, target_type, key);
CREATE INDEX search_reference_target ON search_reference (target_id, target_type);
CREATE INDEX search_reference_key ON search_reference (key);

CREATE TABLE search_uri (
    key   INTEGER NOT NULL,
    type  TEXT NOT NULL,
    param TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX search_uri_value ON search_uri (type, param, value, key);
CREATE INDEX search_uri_key ON search_uri (key);

-- Resources of a type in key order: the default search order.
CREATE INDEX resource_type_key ON resource (type, key) WHERE deleted = 0;
