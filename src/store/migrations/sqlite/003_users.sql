-- People who sign in to the dashboard, the accounts they belong to, their sessions and
-- invitations, and failed sign-ins for throttling.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    created_at     INTEGER NOT NULL
);

CREATE TABLE memberships (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    role        TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

-- Each account made before this migration gets its owner as a user without a password; the
-- operator sets one with `konnect user set-password`.
INSERT INTO users(id, email, password_hash, created_at)
    SELECT 'user_' || substr(id, 6), email, NULL, created_at FROM accounts;
INSERT INTO memberships(account_id, user_id, role, created_at)
    SELECT id, 'user_' || substr(id, 6), 'owner', created_at FROM accounts;

CREATE TABLE sessions (
    token_hash    BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    csrf_token    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    ip            TEXT
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE invites (
    token_hash   BLOB PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    email        TEXT NOT NULL,
    invited_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_at  INTEGER
) WITHOUT ROWID;

CREATE TABLE signin_failures (
    kind  TEXT NOT NULL,  -- 'email' or 'ip'
    key   TEXT NOT NULL,
    at    INTEGER NOT NULL
);
CREATE INDEX signin_failures_key ON signin_failures(kind, key, at);
