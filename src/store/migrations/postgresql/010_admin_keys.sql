-- Admin keys (sk_admin_...): an account's keys for the management API, kept with its other keys
-- so that they are hashed, listed, rolled, revoked and carried to every server the same way.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_mode_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_mode_check CHECK (mode IN ('live', 'test', 'admin'));
