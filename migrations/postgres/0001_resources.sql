-- Resources and their versions. A resource row holds the current version (body NULL once
-- deleted); resource_version keeps every version for vread and _history.
CREATE TABLE resource (
    key          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type         text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    version      bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    body         jsonb,
    CONSTRAINT resource_type_id UNIQUE (type, id),
    CONSTRAINT resource_body_unless_deleted CHECK (deleted OR body IS NOT NULL)
);

CREATE TABLE resource_version (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          bigint      NOT NULL REFERENCES resource (key),
    type         text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    version      bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    method       text        NOT NULL CHECK (method IN ('POST', 'PUT', 'DELETE')),
    body         jsonb,
    CONSTRAINT resource_version_key_version UNIQUE (key, version)
);

-- System- and type-level history, newest first.
CREATE INDEX resource_version_newest ON resource_version (last_updated DESC, seq DESC);
CREATE INDEX resource_version_type_newest ON resource_version (type, last_updated DESC, seq DESC);
