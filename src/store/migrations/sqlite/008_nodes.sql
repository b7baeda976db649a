-- The servers that use this store. Each writes its row about once a second (and at once after it
-- applied changes): that it is alive, and how far it has applied the key and account change logs,
-- so that a change can be confirmed applied by every live server (one whose row is under 3
-- seconds old). seen_ms is the store's clock, never a server's own.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    seen_ms      INTEGER NOT NULL,
    key_seq      INTEGER NOT NULL,
    account_seq  INTEGER NOT NULL,
    counters     TEXT NOT NULL,  -- where its limits are counted: 'local' or 'redis'
    version      TEXT NOT NULL,
    address      TEXT NOT NULL
) WITHOUT ROWID;
