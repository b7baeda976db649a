-- Invoice numbers: one sequence for the whole server, without gaps, given to an account's month
-- the first time its invoice is issued after the month closed (an open month's invoice is a
-- draft and has none). A number is never given twice nor taken back.
CREATE TABLE invoice_numbers (
    account_id TEXT NOT NULL,
    month      BIGINT NOT NULL, -- year * 12 + month - 1
    seq        BIGINT NOT NULL UNIQUE,
    issued_at  BIGINT NOT NULL, -- Unix seconds
    PRIMARY KEY (account_id, month)
);
