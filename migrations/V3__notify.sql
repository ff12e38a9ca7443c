-- Changes to what a tenant's kernel must look like are announced on channel `meshwg` with the
-- org id as payload, so a controller learns of edits made by other processes (an operator's
-- psql, `meshwg admin`, a second controller's API) without polling the database.
-- Only columns that reach the kernel notify: recording where machines were last seen does not.

CREATE FUNCTION meshwg_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    org UUID;
BEGIN
    IF TG_TABLE_NAME = 'orgs' THEN
        IF TG_OP = 'DELETE' THEN org := OLD.id; ELSE org := NEW.id; END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN org := OLD.org_id; ELSE org := NEW.org_id; END IF;
    END IF;
    PERFORM pg_notify('meshwg', org::text);
    RETURN NULL;
END $$;

CREATE TRIGGER machines_notify
    AFTER INSERT OR DELETE OR UPDATE OF address, public_key, tags, name ON machines
    FOR EACH ROW EXECUTE FUNCTION meshwg_notify();
CREATE TRIGGER policies_notify
    AFTER INSERT OR DELETE OR UPDATE ON policies
    FOR EACH ROW EXECUTE FUNCTION meshwg_notify();
CREATE TRIGGER orgs_notify
    AFTER UPDATE OF name, default_action, listen_port, hub_key_version, hub_key_nonce,
        hub_key_ciphertext, state ON orgs
    FOR EACH ROW EXECUTE FUNCTION meshwg_notify();
