-- The servers that use this store. Each writes its row about once a second (and at once after it
-- applied changes): that it is alive, and how far it has applied the key and account change logs,
-- so that a change can be confirmed applied by every live server (one whose row is under 3
-- seconds old). seen_ms is PostgreSQL's clock, never a server's own, so that servers whose clocks
-- disagree still agree on who is live.
CREATE TABLE nodes (
    id           text COLLATE "C" PRIMARY KEY,
    started_at   bigint NOT NULL,
    seen_ms      bigint NOT NULL,
    key_seq      bigint NOT NULL,
    account_seq  bigint NOT NULL,
    counters     text NOT NULL,  -- where its limits are counted: 'local' or 'redis'
    version      text NOT NULL,
    address      text NOT NULL
);
