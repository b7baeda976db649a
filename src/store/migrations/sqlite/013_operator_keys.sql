-- Operator keys (sk_op_...): the operator's own keys for the operator API (/v1/operator/...),
-- made with konnect operator-key create. They belong to no account. Only a keyed hash of each is
-- kept; a revoked key stays, for the audit log's sake.
CREATE TABLE operator_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    hash          BLOB NOT NULL UNIQUE,
    hint          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER,
    revoked_by    TEXT
);
