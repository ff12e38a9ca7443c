-- Notifications also name the transaction that made the change (`<org id> <txid>`), so a
-- controller whose last read of the tenant's rows already saw that transaction does not read
-- them again. An older controller ignores payloads it cannot parse (its full check still
-- covers them).

CREATE OR REPLACE FUNCTION meshwg_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    org UUID;
BEGIN
    IF TG_TABLE_NAME = 'orgs' THEN
        IF TG_OP = 'DELETE' THEN org := OLD.id; ELSE org := NEW.id; END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN org := OLD.org_id; ELSE org := NEW.org_id; END IF;
    END IF;
    PERFORM pg_notify('meshwg', org::text || ' ' || txid_current()::text);
    RETURN NULL;
END $$;
