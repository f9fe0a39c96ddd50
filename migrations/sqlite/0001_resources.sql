-- Resources and their versions (see migrations/postgres for the commented original).
-- Times are integer microseconds since the Unix epoch; bodies are JSON text.
CREATE TABLE resource (
    key          INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted      INTEGER NOT NULL DEFAULT 0,
    body         TEXT,
    CONSTRAINT resource_type_id UNIQUE (type, id),
    CONSTRAINT resource_body_unless_deleted CHECK (deleted OR body IS NOT NULL)
);

CREATE TABLE resource_version (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    key          INTEGER NOT NULL REFERENCES resource (key),
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    method       TEXT    NOT NULL CHECK (method IN ('POST', 'PUT', 'DELETE')),
    body         TEXT,
    CONSTRAINT resource_version_key_version UNIQUE (key, version)
);

CREATE INDEX resource_version_newest ON resource_version (last_updated DESC, seq DESC);
CREATE INDEX resource_version_type_newest ON resource_version (type, last_updated DESC, seq DESC);
