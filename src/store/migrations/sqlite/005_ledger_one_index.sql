-- The ledger keeps one index: its primary key. Request ids start with the time, so a group commit
-- appends to the right-hand pages of that one B-tree. Nothing reads the ledger by account: the
-- quotas, charts and invoices read usage_rollup. The index on (account_id, month) cost every
-- billed request a page write and made the write-ahead log a third larger.
DROP INDEX IF EXISTS usage_ledger_account_month;
