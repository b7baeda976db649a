-- Two-factor sign-in with an authenticator app (TOTP): the user's seed sealed under a key derived
-- from the server secret (NULL: none), when it was turned on (NULL while it is only set up), the
-- last time step whose code was accepted (each code works once), and the keyed hashes of the
-- recovery codes not used yet. An account's owner may require it of every member.
ALTER TABLE users ADD COLUMN totp_seed TEXT;
ALTER TABLE users ADD COLUMN totp_enabled_at INTEGER;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN recovery_codes TEXT;
ALTER TABLE accounts ADD COLUMN require_two_factor INTEGER NOT NULL DEFAULT 0;
