-- Plans in the store: `konnect plans apply FILE` publishes a plans file as a new version, which
-- every server puts in force like a key change; each server's heartbeat says which version it has
-- applied, and each ledger row which version priced it (0: a plans file read by the server).
CREATE TABLE plans_versions (
    version     INTEGER PRIMARY KEY,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
);
ALTER TABLE nodes ADD COLUMN plans_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN plan_version INTEGER NOT NULL DEFAULT 0;
