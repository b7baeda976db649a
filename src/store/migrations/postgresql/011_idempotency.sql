-- Idempotency keys of the management and operator APIs (Idempotency-Key, as Stripe has it): per
-- scope (an account's id, or 'operator'), the first request's fingerprint and, once it finished,
-- its answer (never a secret: a created key's is taken out). Kept a day.
CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    status        INTEGER NOT NULL DEFAULT 0,  -- 0 while the first request is in flight
    body          TEXT,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
