-- A restricted live key's own monthly quota of requests (0: only its account's), counted against
-- the requests billed in the month to the key and to the keys it replaced (quota_key names the
-- first of them, NULL for a key that replaced none), so that rolling a key never starts its
-- quota again. A change reaches every server through the key change feed.
ALTER TABLE api_keys ADD COLUMN monthly_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN quota_key TEXT;
CREATE INDEX api_keys_quota_key ON api_keys(quota_key) WHERE quota_key IS NOT NULL;
DROP TRIGGER api_keys_changed_update;
CREATE TRIGGER api_keys_changed_update AFTER UPDATE OF expires_at, revoked_at, ip_allowlist,
    models, requests_per_minute, monthly_requests ON api_keys
BEGIN
    INSERT INTO key_changes(key_id, at) VALUES (NEW.id, CAST(strftime('%s', 'now') AS INTEGER));
END;
-- Keys rolled before this version: each replacement joins the line of the first key it descends
-- from.
CREATE TEMP TABLE key_lines(id TEXT PRIMARY KEY, root TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO key_lines
WITH RECURSIVE line(id, root) AS (
    SELECT r.id, r.id FROM api_keys r
    WHERE NOT EXISTS (SELECT 1 FROM api_keys p WHERE p.rolled_to = r.id)
    UNION ALL
    SELECT n.id, line.root FROM line JOIN api_keys c ON c.id = line.id
    JOIN api_keys n ON n.id = c.rolled_to)
SELECT id, root FROM line WHERE id <> root;
UPDATE api_keys SET quota_key = (SELECT root FROM key_lines WHERE key_lines.id = api_keys.id)
WHERE id IN (SELECT id FROM key_lines);
DROP TABLE key_lines;
