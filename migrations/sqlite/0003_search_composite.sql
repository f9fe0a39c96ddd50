-- See migrations/postgres/0003_search_composite.sql for the commented original.
CREATE TABLE search_composite (
    key   INTEGER NOT NULL,
    type  TEXT NOT NULL,
    param TEXT NOT NULL,
    c0_t TEXT, c0_x TEXT, c0_lo REAL, c0_hi REAL, c0_u TEXT,
    c1_t TEXT, c1_x TEXT, c1_lo REAL, c1_hi REAL, c1_u TEXT,
    c2_t TEXT, c2_x TEXT, c2_lo REAL, c2_hi REAL, c2_u TEXT
);
CREATE INDEX search_composite_value ON search_composite (type, param, c0_t, key);
CREATE INDEX search_composite_key ON search_composite (key);
