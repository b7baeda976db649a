-- A ledger row can be a fence instead of a bill: store_ledger_void writes a row with voided = 1
-- and no usage for a request that must never be billed (its answer was never delivered), so that
-- a late store_ledger_add of the same request id adds nothing. Fences never reach the rollup.
ALTER TABLE usage_ledger ADD COLUMN voided INTEGER NOT NULL DEFAULT 0;
