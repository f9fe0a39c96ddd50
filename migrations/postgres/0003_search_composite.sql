-- Composite search parameters (R4 search.html#composite): one row per combination of
-- component values taken from the same element. Component n has the columns
-- cn_t (main text: folded string, code, target id, uri), cn_x (second text: exact string,
-- system, target type), cn_lo / cn_hi (number or quantity value; date range in
-- microseconds), cn_u (unit, display text or url).
CREATE TABLE search_composite (
    key   bigint NOT NULL,
    type  text COLLATE "C" NOT NULL,
    param text COLLATE "C" NOT NULL,
    c0_t text COLLATE "C", c0_x text COLLATE "C", c0_lo double precision, c0_hi double precision, c0_u text COLLATE "C",
    c1_t text COLLATE "C", c1_x text COLLATE "C", c1_lo double precision, c1_hi double precision, c1_u text COLLATE "C",
    c2_t text COLLATE "C", c2_x text COLLATE "C", c2_lo double precision, c2_hi double precision, c2_u text COLLATE "C"
);
CREATE INDEX search_composite_value ON search_composite (type, param, c0_t, key);
CREATE INDEX search_composite_key ON search_composite (key);
