-- The whole schema of SQLite's migrations 001 to 007 in one, so that a schema version means the
-- same tables on both backends (`konnect store copy` checks that they agree). Times are Unix
-- seconds (milliseconds where the name says so) as on SQLite; text that is compared or ordered
-- uses the "C" collation, so that every listing comes in the same order as from SQLite.

CREATE TABLE accounts (
    id              text COLLATE "C" PRIMARY KEY,
    email           text COLLATE "C" NOT NULL UNIQUE,
    created_at      bigint NOT NULL,
    -- The plan an account is on (NULL: the plans file's default plan) and the operator's
    -- overrides of that plan's monthly quotas (NULL: the plan's; -1: unlimited).
    plan            text,
    quota_requests  bigint,
    quota_tokens    bigint
);

CREATE TABLE api_keys (
    id            text COLLATE "C" PRIMARY KEY,
    account_id    text COLLATE "C" NOT NULL REFERENCES accounts(id),
    name          text NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('live', 'test')),
    environment   text NOT NULL CHECK (environment IN ('development', 'staging', 'production')),
    hash          bytea NOT NULL UNIQUE,
    hint          text NOT NULL,
    created_at    bigint NOT NULL,
    created_by    text NOT NULL,
    last_used_at  bigint,
    expires_at    bigint,
    revoked_at    bigint,
    revoked_by    text,
    ip_allowlist  text NOT NULL DEFAULT '',
    rolled_to     text COLLATE "C",
    -- Insertion order (SQLite's rowid), for listings of keys made in the same second.
    ord           bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX api_keys_account ON api_keys(account_id, created_at, ord);

-- One row per key and UTC day (days since the epoch) with the number of requests it served.
CREATE TABLE key_usage_daily (
    key_id    text COLLATE "C" NOT NULL REFERENCES api_keys(id),
    day       bigint NOT NULL,
    requests  bigint NOT NULL,
    PRIMARY KEY (key_id, day)
);

-- The change logs: every insert of a key and every change of its expiry, revocation or
-- allowlist, and every change of an account's plan or quota, appends a row, whoever makes it.
-- Readers apply the rows after the last sequence number they have read, so the numbers must
-- become visible in their order: PostgreSQL hands out sequence values at insert, not at commit,
-- so each writer takes a transaction-level advisory lock before it takes its number and holds it
-- to its commit. Change writers are few (key and account changes, never requests) and short.
-- Each change also notifies listeners (the payload is only a hint; the log is the truth).
CREATE TABLE key_changes (
    seq     bigint PRIMARY KEY,
    key_id  text COLLATE "C" NOT NULL,
    at      bigint NOT NULL
);
CREATE SEQUENCE key_changes_seq;
CREATE TABLE account_changes (
    seq         bigint PRIMARY KEY,
    account_id  text COLLATE "C" NOT NULL,
    at          bigint NOT NULL
);
CREATE SEQUENCE account_changes_seq;

CREATE FUNCTION konnect_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7200001);
    INSERT INTO key_changes(seq, key_id, at)
        VALUES (nextval('key_changes_seq'), NEW.id, extract(epoch FROM now())::bigint);
    PERFORM pg_notify('konnect_changes', 'keys');
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_changed_insert AFTER INSERT ON api_keys
    FOR EACH ROW EXECUTE FUNCTION konnect_key_changed();
CREATE TRIGGER api_keys_changed_update AFTER UPDATE OF expires_at, revoked_at, ip_allowlist
    ON api_keys FOR EACH ROW EXECUTE FUNCTION konnect_key_changed();

CREATE FUNCTION konnect_account_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7200002);
    INSERT INTO account_changes(seq, account_id, at)
        VALUES (nextval('account_changes_seq'), NEW.id, extract(epoch FROM now())::bigint);
    PERFORM pg_notify('konnect_changes', 'accounts');
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_changed_plan AFTER UPDATE OF plan, quota_requests, quota_tokens
    ON accounts FOR EACH ROW EXECUTE FUNCTION konnect_account_changed();

-- Who did what, when, from where, with what result. Never holds a secret.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          bigint NOT NULL,
    account_id  text COLLATE "C",
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text,
    ip          text,
    result      text NOT NULL,
    detail      text
);
CREATE INDEX audit_log_account ON audit_log(account_id, id);
CREATE INDEX audit_log_at ON audit_log(at);

-- People who sign in to the dashboard, the accounts they belong to, their sessions,
-- invitations and set-password links (only keyed hashes of their tokens), and throttles.
CREATE TABLE users (
    id             text COLLATE "C" PRIMARY KEY,
    email          text COLLATE "C" NOT NULL UNIQUE,
    password_hash  text,
    created_at     bigint NOT NULL
);

CREATE TABLE memberships (
    account_id  text COLLATE "C" NOT NULL REFERENCES accounts(id),
    user_id     text COLLATE "C" NOT NULL REFERENCES users(id),
    role        text NOT NULL CHECK (role IN ('owner', 'member')),
    created_at  bigint NOT NULL,
    ord         bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (account_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);

CREATE TABLE sessions (
    token_hash    bytea PRIMARY KEY,
    user_id       text COLLATE "C" NOT NULL REFERENCES users(id),
    account_id    text COLLATE "C" NOT NULL REFERENCES accounts(id),
    csrf_token    text NOT NULL,
    created_at    bigint NOT NULL,
    last_seen_at  bigint NOT NULL,
    expires_at    bigint NOT NULL,
    ip            text
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE invites (
    token_hash   bytea PRIMARY KEY,
    id           text COLLATE "C" UNIQUE,
    account_id   text COLLATE "C" NOT NULL REFERENCES accounts(id),
    email        text COLLATE "C" NOT NULL,
    invited_by   text NOT NULL,
    created_at   bigint NOT NULL,
    expires_at   bigint NOT NULL,
    accepted_at  bigint,
    failures     integer NOT NULL DEFAULT 0,
    canceled_at  bigint
);
CREATE INDEX invites_account ON invites(account_id, created_at);

CREATE TABLE password_tokens (
    token_hash  bytea PRIMARY KEY,
    user_id     text COLLATE "C" NOT NULL REFERENCES users(id),
    created_at  bigint NOT NULL,
    expires_at  bigint NOT NULL,
    used_at     bigint
);
CREATE INDEX password_tokens_user ON password_tokens(user_id);

CREATE TABLE throttles (
    kind      text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    count     bigint NOT NULL,
    first_at  bigint NOT NULL,
    last_at   bigint NOT NULL,
    refused   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, key)
);
CREATE INDEX throttles_last ON throttles(last_at);

-- Exactly one row per billed request: the request id is the primary key, so that a request can
-- never be billed twice. Prices are integer micro-units of the currency. A row with voided = 1
-- is a fence, not a bill: a request that must never be billed (its answer was never delivered),
-- so that a late insert of the same request id adds nothing. Fences never reach the rollup.
CREATE TABLE usage_ledger (
    request_id     text COLLATE "C" PRIMARY KEY,
    account_id     text COLLATE "C" NOT NULL,
    key_id         text COLLATE "C" NOT NULL,
    environment    text NOT NULL,
    model          text COLLATE "C" NOT NULL,
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    price_micros   bigint NOT NULL,
    currency       text NOT NULL,
    plan           text NOT NULL,
    at_ms          bigint NOT NULL,
    month          bigint NOT NULL, -- year * 12 + month - 1, in UTC
    voided         smallint NOT NULL DEFAULT 0
);

-- The ledger summed per account, key, model and UTC day, written in the same transaction as the
-- ledger rows it sums: the dashboard's charts, the quotas and the invoices read this.
CREATE TABLE usage_rollup (
    account_id     text COLLATE "C" NOT NULL,
    day            bigint NOT NULL,
    key_id         text COLLATE "C" NOT NULL,
    model          text COLLATE "C" NOT NULL,
    environment    text NOT NULL,
    month          bigint NOT NULL,
    requests       bigint NOT NULL,
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    price_micros   bigint NOT NULL,
    PRIMARY KEY (account_id, day, key_id, model)
);
CREATE INDEX usage_rollup_month ON usage_rollup(account_id, month);
CREATE INDEX usage_rollup_month_all ON usage_rollup(month);
