-- Restricted keys: the models a key may use (a comma-separated list of public model names, a
-- subset of its plan's; '' for all of them) and its own requests per minute (0: only its
-- account's limit). A change reaches every server through the key change feed.
ALTER TABLE api_keys ADD COLUMN models TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER NOT NULL DEFAULT 0;
DROP TRIGGER api_keys_changed_update;
CREATE TRIGGER api_keys_changed_update AFTER UPDATE OF expires_at, revoked_at, ip_allowlist,
    models, requests_per_minute ON api_keys
BEGIN
    INSERT INTO key_changes(key_id, at) VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
