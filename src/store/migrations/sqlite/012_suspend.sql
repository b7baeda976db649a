-- An account the operator suspended (konnect account suspend, the operator API): every key of it
-- is refused (403 account_suspended) on every server until it is reinstated. The change feed
-- carries the change like a plan's.
ALTER TABLE accounts ADD COLUMN suspended_at INTEGER;
DROP TRIGGER accounts_changed_plan;
CREATE TRIGGER accounts_changed_plan AFTER UPDATE OF plan, quota_requests, quota_tokens,
    suspended_at ON accounts
BEGIN
    INSERT INTO account_changes(account_id, at)
        VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
