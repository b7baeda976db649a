-- An account the operator suspended (konnect account suspend, the operator API): every key of it
-- is refused (403 account_suspended) on every server until it is reinstated. The change feed
-- carries the change like a plan's.
ALTER TABLE accounts ADD COLUMN suspended_at BIGINT;
DROP TRIGGER accounts_changed_plan ON accounts;
CREATE TRIGGER accounts_changed_plan AFTER UPDATE OF plan, quota_requests, quota_tokens,
    suspended_at ON accounts FOR EACH ROW EXECUTE FUNCTION konnect_account_changed();
