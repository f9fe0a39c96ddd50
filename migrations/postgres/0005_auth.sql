-- Hearth's own SMART authorization server: users, clients and signing keys, and the
-- short-lived things of its grants (pending logins, authorization codes, refresh tokens,
-- used client-assertion ids, revoked access tokens). One table keyed by kind and id; the
-- body is JSON text that only Hearth reads. Secrets (codes, refresh tokens) are stored as
-- their SHA-256, never as themselves.
CREATE TABLE auth_object (
    kind       TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    -- Unix seconds after which the object is void; NULL for ever.
    expires_at BIGINT,
    PRIMARY KEY (kind, id)
);

CREATE INDEX auth_object_expires ON auth_object (expires_at) WHERE expires_at IS NOT NULL;
