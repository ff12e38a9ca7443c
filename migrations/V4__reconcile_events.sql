-- What the reconciler did on its own: repairs of drift (non-empty plans nobody asked for),
-- failed reconciles and actor restarts, for an org's timeline. Bounded: identical events within
-- 60 s are one row with a count, and an org keeps its newest 1,000 (see src/db/events.rs).
-- Deleted with the org.

CREATE TABLE reconcile_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- The latest occurrence (the first is `first_at`).
    at          TIMESTAMPTZ NOT NULL,
    first_at    TIMESTAMPTZ NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('repair', 'failure', 'restart')),
    summary     TEXT NOT NULL CHECK (char_length(summary) <= 500),
    -- Kernel commands and errors: shown to the operator only.
    detail      TEXT NOT NULL DEFAULT '' CHECK (char_length(detail) <= 8000),
    count       INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
    duration_ms INTEGER NOT NULL DEFAULT 0 CHECK (duration_ms >= 0)
);

CREATE INDEX reconcile_events_org_at ON reconcile_events (org_id, at DESC, id DESC);
