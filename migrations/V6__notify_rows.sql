-- Notifications of machine and policy rows also name the row (`<org id> <txid> <table> <row
-- id>`), so a controller reads that row again instead of all of the tenant's rows (2,000
-- policies take milliseconds to read; one takes a fraction of one). Org rows keep the two-word
-- payload (a tenant's actor reads everything again for those). An older controller ignores
-- payloads it cannot parse (its full check still covers them).
--
-- Confirming a policy created through the API (`pending_until` set to NULL) changes nothing
-- the kernel holds, so it no longer notifies: like machines, only the columns that reach the
-- kernel do.

CREATE OR REPLACE FUNCTION meshwg_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    org UUID;
    payload TEXT;
BEGIN
    IF TG_TABLE_NAME = 'orgs' THEN
        IF TG_OP = 'DELETE' THEN org := OLD.id; ELSE org := NEW.id; END IF;
        payload := org::text || ' ' || txid_current()::text;
    ELSIF TG_OP = 'DELETE' THEN
        payload := OLD.org_id::text || ' ' || txid_current()::text || ' ' || TG_TABLE_NAME
            || ' ' || OLD.id::text;
    ELSE
        -- A row moved to another org leaves its old org to read everything again.
        IF TG_OP = 'UPDATE' AND OLD.org_id <> NEW.org_id THEN
            PERFORM pg_notify('meshwg', OLD.org_id::text || ' ' || txid_current()::text);
        END IF;
        payload := NEW.org_id::text || ' ' || txid_current()::text || ' ' || TG_TABLE_NAME
            || ' ' || NEW.id::text;
    END IF;
    PERFORM pg_notify('meshwg', payload);
    RETURN NULL;
END $$;

DROP TRIGGER policies_notify ON policies;
CREATE TRIGGER policies_notify
    AFTER INSERT OR DELETE OR UPDATE OF name, priority, action, src, dst, protocol, ports,
        enabled, org_id, id ON policies
    FOR EACH ROW EXECUTE FUNCTION meshwg_notify();
