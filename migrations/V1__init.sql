-- MeshWG schema, version 1. Applied at start under an advisory lock.

CREATE TABLE orgs (
    id                 UUID PRIMARY KEY,
    -- Kernel id: every kernel name of the tenant derives from it (mwg-<kid>, mwg<kid>).
    kid                BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    name               TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    cidr               CIDR NOT NULL CHECK (family(cidr) = 4 AND masklen(cidr) BETWEEN 8 AND 28),
    listen_port        INTEGER NOT NULL UNIQUE CHECK (listen_port BETWEEN 1 AND 65535),
    hub_public_key     TEXT NOT NULL CHECK (char_length(hub_public_key) = 44),
    -- The hub private key, AES-256-GCM sealed with the org id as associated data.
    hub_key_version    SMALLINT NOT NULL,
    hub_key_nonce      BYTEA NOT NULL CHECK (octet_length(hub_key_nonce) = 12),
    hub_key_ciphertext BYTEA NOT NULL CHECK (octet_length(hub_key_ciphertext) = 48),
    default_action     TEXT NOT NULL DEFAULT 'allow' CHECK (default_action IN ('allow', 'deny')),
    -- creating: kernel objects being made (rolled back if the controller dies meanwhile);
    -- deleting: being torn down (finished at the next start).
    state              TEXT NOT NULL DEFAULT 'creating' CHECK (state IN ('creating', 'active', 'deleting')),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    org_id        UUID REFERENCES orgs (id) ON DELETE CASCADE,
    email         TEXT NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('operator', 'admin', 'member')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Operators belong to no org; everybody else to exactly one.
    CHECK ((role = 'operator') = (org_id IS NULL))
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_org_idx ON users (org_id);

CREATE TABLE sessions (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TABLE machines (
    id         UUID PRIMARY KEY,
    org_id     UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    address    INET NOT NULL CHECK (family(address) = 4 AND masklen(address) = 32),
    public_key TEXT NOT NULL CHECK (char_length(public_key) = 44),
    tags       TEXT[] NOT NULL DEFAULT '{}',
    -- Where the hub last saw the machine (observed, not configured): lets a hub that had to be
    -- recreated handshake with its machines at once instead of waiting minutes for them.
    last_endpoint TEXT CHECK (char_length(last_endpoint) <= 64),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, address),
    UNIQUE (org_id, public_key)
);

-- A machine address lies inside its org's network and is neither network, hub nor broadcast.
CREATE FUNCTION machines_address_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM orgs o
        WHERE o.id = NEW.org_id
          AND NEW.address << o.cidr
          -- host(...)::inet strips the org's netmask so the comparison is address against address.
          AND NEW.address > host(network(o.cidr) + 1)::inet
          AND NEW.address < host(broadcast(o.cidr))::inet
          AND NEW.public_key <> o.hub_public_key
    ) THEN
        RAISE EXCEPTION 'machine address % is not a host address of its org network', NEW.address
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER machines_address_check BEFORE INSERT OR UPDATE OF address, org_id, public_key ON machines
    FOR EACH ROW EXECUTE FUNCTION machines_address_check();

CREATE TABLE policies (
    id         UUID PRIMARY KEY,
    org_id     UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name       TEXT NOT NULL DEFAULT '' CHECK (char_length(name) <= 64),
    priority   INTEGER NOT NULL DEFAULT 100,
    action     TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
    src        JSONB NOT NULL,
    dst        JSONB NOT NULL,
    protocol   TEXT NOT NULL DEFAULT 'any' CHECK (protocol IN ('any', 'tcp', 'udp', 'icmp')),
    ports      TEXT CHECK (ports IS NULL OR protocol IN ('tcp', 'udp')),
    enabled    BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX policies_org_idx ON policies (org_id);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Org-scoped entries go with their org; operator-level entries (org_id NULL) stay.
    org_id      UUID REFERENCES orgs (id) ON DELETE CASCADE,
    actor_id    UUID,
    actor_email TEXT,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT,
    detail      JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_org_idx ON audit_log (org_id, at);
