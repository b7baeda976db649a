-- konnect: foreign keys off
-- Admin keys (sk_admin_...): an account's keys for the management API, kept with its other keys
-- so that they are hashed, listed, rolled, revoked and carried to every server the same way.
-- SQLite cannot change a CHECK constraint, so the table is made again (its twelve-step recipe:
-- foreign keys are off while it runs, and checked before it commits); each key keeps its rowid,
-- the order of the listings.
CREATE TABLE api_keys_new (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    name          TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test', 'admin')),
    environment   TEXT NOT NULL CHECK (environment IN ('development', 'staging', 'production')),
    hash          BLOB NOT NULL UNIQUE,
    hint          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    last_used_at  INTEGER,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    revoked_by    TEXT,
    ip_allowlist  TEXT NOT NULL DEFAULT '',
    rolled_to     TEXT
);
INSERT INTO api_keys_new (rowid, id, account_id, name, mode, environment, hash, hint, created_at,
                          created_by, last_used_at, expires_at, revoked_at, revoked_by,
                          ip_allowlist, rolled_to)
    SELECT rowid, id, account_id, name, mode, environment, hash, hint, created_at, created_by,
           last_used_at, expires_at, revoked_at, revoked_by, ip_allowlist, rolled_to
    FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_account ON api_keys(account_id, created_at);
CREATE TRIGGER api_keys_changed_insert AFTER INSERT ON api_keys
BEGIN
    INSERT INTO key_changes(key_id, at) VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER api_keys_changed_update AFTER UPDATE OF expires_at, revoked_at, ip_allowlist
    ON api_keys
BEGIN
    INSERT INTO key_changes(key_id, at) VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
