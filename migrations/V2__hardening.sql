-- MeshWG schema, version 2: hardening.

-- One case rule for emails, applied in Rust (crate::auth::email_key, Unicode lowercase): SQL
-- compares keys and never folds case, since its lower() follows the locale and under C folds
-- ASCII only. Filled for existing rows right after this migration, by the same Rust function.
ALTER TABLE users ADD COLUMN email_key TEXT;
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_key_idx ON users (email_key);

-- A machine or policy is inserted pending and confirmed, together with its audit entry, once the
-- kernel has it. A pending row past its deadline is abandoned: the reconciler leaves it out and
-- the controller deletes it, so a creation that failed halfway ends as nothing.
ALTER TABLE machines ADD COLUMN pending_until TIMESTAMPTZ;
ALTER TABLE policies ADD COLUMN pending_until TIMESTAMPTZ;
CREATE INDEX machines_pending_idx ON machines (pending_until) WHERE pending_until IS NOT NULL;
CREATE INDEX policies_pending_idx ON policies (pending_until) WHERE pending_until IS NOT NULL;

-- Which installation this database is. The controller writes it beside its runtime state and
-- refuses to touch kernel objects that another installation made.
CREATE TABLE installation (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    id         UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO installation (id) VALUES (gen_random_uuid());
