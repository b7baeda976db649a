-- Per-key IP allowlists, key rolling and the audit log.
ALTER TABLE api_keys ADD COLUMN ip_allowlist TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN rolled_to TEXT;

CREATE TRIGGER api_keys_changed_allowlist AFTER UPDATE OF ip_allowlist ON api_keys
BEGIN
    INSERT INTO key_changes(key_id) VALUES (NEW.id);
END;

-- Who did what, when, from where, with what result. Never holds a secret.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    account_id  TEXT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    ip          TEXT,
    result      TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_log_account ON audit_log(account_id, id);
