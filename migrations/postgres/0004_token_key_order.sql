-- Token lookups by code, in key order: a page of a large result (`status=free`) starts its
-- index scan at the paging cursor instead of re-reading every match. The system, when given,
-- is checked from the index itself.
DROP INDEX search_token_value;
CREATE INDEX search_token_value ON search_token (type, param, code, key, system);
