-- Requests refused by a limit or a quota (429: a rate limit, the daily limit, the in-flight cap, a
-- monthly quota), per key and UTC day, beside the requests that passed the key's limits: the
-- dashboard's API Keys list labels them apart. The requests column keeps its meaning (the count
-- a test key's daily limit resumes from).
ALTER TABLE key_usage_daily ADD COLUMN refused BIGINT NOT NULL DEFAULT 0;
