-- Accounts, API keys and the change log that carries every key change to running servers.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    name          TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    environment   TEXT NOT NULL CHECK (environment IN ('development', 'staging', 'production')),
    hash          BLOB NOT NULL UNIQUE,
    hint          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    last_used_at  INTEGER,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    revoked_by    TEXT
);
CREATE INDEX api_keys_account ON api_keys(account_id, created_at);

-- One row per key and UTC day (days since the epoch) with the number of requests it served.
CREATE TABLE key_usage_daily (
    key_id    TEXT NOT NULL REFERENCES api_keys(id),
    day       INTEGER NOT NULL,
    requests  INTEGER NOT NULL,
    PRIMARY KEY (key_id, day)
) WITHOUT ROWID;

-- Every insert of a key and every change of its expiry or revocation appends a row here, whoever
-- makes it; servers apply the rows after the last sequence number they have seen.
CREATE TABLE key_changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id  TEXT NOT NULL
);
CREATE TRIGGER api_keys_changed_insert AFTER INSERT ON api_keys
BEGIN
    INSERT INTO key_changes(key_id) VALUES (NEW.id);
END;
CREATE TRIGGER api_keys_changed_update AFTER UPDATE OF expires_at, revoked_at ON api_keys
BEGIN
    INSERT INTO key_changes(key_id) VALUES (NEW.id);
END;
