-- Plans in the store: `konnect plans apply FILE` publishes a plans file as a new version, which
-- every server puts in force like a key change (notified, and read again after any reconnect);
-- each server's heartbeat says which version it has applied, and each ledger row which version
-- priced it (0: a plans file read by the server). Readers take the newest version, so versions
-- that commit out of order need no lock.
CREATE TABLE plans_versions (
    version     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body        text NOT NULL,
    created_at  bigint NOT NULL,
    created_by  text NOT NULL
);
ALTER TABLE nodes ADD COLUMN plans_version bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN plan_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION konnect_plans_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('konnect_changes', 'plans');
    RETURN NULL;
END $$;
CREATE TRIGGER plans_versions_inserted AFTER INSERT ON plans_versions
    FOR EACH ROW EXECUTE FUNCTION konnect_plans_changed();
