-- Plans, quotas and the usage ledger that billing is computed from.

-- The plan an account is on (NULL: the plans file's default plan) and the operator's overrides of
-- that plan's monthly quotas (NULL: the plan's; -1: unlimited).
ALTER TABLE accounts ADD COLUMN plan TEXT;
ALTER TABLE accounts ADD COLUMN quota_requests INTEGER;
ALTER TABLE accounts ADD COLUMN quota_tokens INTEGER;

-- Every change of an account's plan or quota appends a row here; running servers apply the rows
-- after the last sequence number they have seen, like key_changes.
CREATE TABLE account_changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT NOT NULL
);
CREATE TRIGGER accounts_changed_plan AFTER UPDATE OF plan, quota_requests, quota_tokens ON accounts
BEGIN
    INSERT INTO account_changes(account_id) VALUES (NEW.id);
END;

-- Exactly one row per billed request. The request id is the primary key, so that a request can
-- never be billed twice. Prices are integer micro-units of the currency (1 USD = 1000000).
CREATE TABLE usage_ledger (
    request_id     TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    environment    TEXT NOT NULL,
    model          TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    price_micros   INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    plan           TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    month          INTEGER NOT NULL -- year * 12 + month - 1, in UTC
) WITHOUT ROWID;
CREATE INDEX usage_ledger_account_month ON usage_ledger(account_id, month);

-- The ledger summed per account, key, model and UTC day, written in the same transaction as the
-- ledger rows it sums: the dashboard's charts and the invoices read this, never the raw ledger.
CREATE TABLE usage_rollup (
    account_id     TEXT NOT NULL,
    day            INTEGER NOT NULL, -- days since the epoch, UTC
    key_id         TEXT NOT NULL,
    model          TEXT NOT NULL,
    environment    TEXT NOT NULL,
    month          INTEGER NOT NULL,
    requests       INTEGER NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    price_micros   INTEGER NOT NULL,
    PRIMARY KEY (account_id, day, key_id, model)
) WITHOUT ROWID;
CREATE INDEX usage_rollup_month ON usage_rollup(account_id, month);
