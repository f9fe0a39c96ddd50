-- Search index rows, extracted from each resource's current version at write time and
-- written in the same transaction. `key` is resource.key; `type` repeats the resource type so
-- that every lookup starts from (type, param, value). Dates are [lo, hi) in microseconds
-- since the Unix epoch. Deleted resources have no rows.
CREATE TABLE search_string (
    key    bigint NOT NULL,
    type   text COLLATE "C" NOT NULL,
    param  text COLLATE "C" NOT NULL,
    folded text COLLATE "C" NOT NULL,
    exact  text COLLATE "C" NOT NULL
);
CREATE INDEX search_string_value ON search_string (type, param, folded, key);
CREATE INDEX search_string_key ON search_string (key);

CREATE TABLE search_token (
    key    bigint NOT NULL,
    type   text COLLATE "C" NOT NULL,
    param  text COLLATE "C" NOT NULL,
    system text COLLATE "C",
    code   text COLLATE "C",
    text   text COLLATE "C"
);
CREATE INDEX search_token_value ON search_token (type, param, code, system, key);
CREATE INDEX search_token_key ON search_token (key);

CREATE TABLE search_date (
    key   bigint NOT NULL,
    type  text COLLATE "C" NOT NULL,
    param text COLLATE "C" NOT NULL,
    lo    bigint NOT NULL,
    hi    bigint NOT NULL
);
CREATE INDEX search_date_value ON search_date (type, param, lo, hi, key);
CREATE INDEX search_date_key ON search_date (key);

CREATE TABLE search_number (
    key   bigint NOT NULL,
    type  text COLLATE "C" NOT NULL,
    param text COLLATE "C" NOT NULL,
    value double precision NOT NULL
);
CREATE INDEX search_number_value ON search_number (type, param, value, key);
CREATE INDEX search_number_key ON search_number (key);

CREATE TABLE search_quantity (
    key    bigint NOT NULL,
    type   text COLLATE "C" NOT NULL,
    param  text COLLATE "C" NOT NULL,
    value  double precision NOT NULL,
    system text COLLATE "C",
    code   text COLLATE "C",
    unit   text COLLATE "C"
);
CREATE INDEX search_quantity_value ON search_quantity (type, param, value, key);
CREATE INDEX search_quantity_key ON search_quantity (key);

CREATE TABLE search_reference (
    key         bigint NOT NULL,
    type        text COLLATE "C" NOT NULL,
    param       text COLLATE "C" NOT NULL,
    target_type text COLLATE "C",
    target_id   text COLLATE "C",
    url         text COLLATE "C"
);
CREATE INDEX search_reference_value ON search_reference (type, param, target_id, target_type, key);
CREATE INDEX search_reference_target ON search_reference (target_id, target_type);
CREATE INDEX search_reference_key ON search_reference (key);

CREATE TABLE search_uri (
    key   bigint NOT NULL,
    type  text COLLATE "C" NOT NULL,
    param text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL
);
CREATE INDEX search_uri_value ON search_uri (type, param, value, key);
CREATE INDEX search_uri_key ON search_uri (key);

-- Resources of a type in key order: the default search order.
CREATE INDEX resource_type_key ON resource (type, key) WHERE NOT deleted;
