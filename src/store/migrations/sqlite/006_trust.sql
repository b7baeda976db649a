-- Accounts that only their people get into.

-- Invitations get an id (so that an owner can cancel one), a count of wrong passwords given with
-- them (five void the invitation) and the time they were cancelled or voided.
ALTER TABLE invites ADD COLUMN id TEXT;
UPDATE invites SET id = 'inv_' || lower(hex(randomblob(10)));
CREATE UNIQUE INDEX invites_id ON invites(id);
CREATE INDEX invites_account ON invites(account_id, created_at);
ALTER TABLE invites ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invites ADD COLUMN canceled_at INTEGER;

-- One-time links with which a user chooses a password (`konnect account create` prints one for
-- the owner it makes). Only the keyed hash of a link's token is stored.
CREATE TABLE password_tokens (
    token_hash  BLOB PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX password_tokens_user ON password_tokens(user_id);

-- Throttles keep one counter per kind and key (an email and address, an address, sign-ups)
-- instead of one row per failure: a flood of attempts updates a row, it does not grow a table.
DROP TABLE signin_failures;
CREATE TABLE throttles (
    kind      TEXT NOT NULL,
    key       TEXT NOT NULL,
    count     INTEGER NOT NULL,   -- attempts counted since first_at
    first_at  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL,
    refused   INTEGER NOT NULL DEFAULT 0, -- attempts refused while throttled, not yet audited
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX throttles_last ON throttles(last_at);

-- Sessions and change-log rows are pruned by age.
CREATE INDEX sessions_expiry ON sessions(expires_at);
CREATE INDEX audit_log_at ON audit_log(at);
ALTER TABLE key_changes ADD COLUMN at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE account_changes ADD COLUMN at INTEGER NOT NULL DEFAULT 0;
DROP TRIGGER api_keys_changed_insert;
DROP TRIGGER api_keys_changed_update;
DROP TRIGGER api_keys_changed_allowlist;
DROP TRIGGER accounts_changed_plan;
CREATE TRIGGER api_keys_changed_insert AFTER INSERT ON api_keys
BEGIN
    INSERT INTO key_changes(key_id, at) VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER api_keys_changed_update AFTER UPDATE OF expires_at, revoked_at, ip_allowlist
    ON api_keys
BEGIN
    INSERT INTO key_changes(key_id, at) VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
CREATE TRIGGER accounts_changed_plan AFTER UPDATE OF plan, quota_requests, quota_tokens
    ON accounts
BEGIN
    INSERT INTO account_changes(account_id, at)
        VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
