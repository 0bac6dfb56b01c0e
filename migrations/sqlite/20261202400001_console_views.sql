-- The console's views: tenants by name (projection "tenants") and run timelines.
-- A new projection: its checkpoint starts at 0, so catch-up fills it from the
-- whole log on the first start after this migration.
CREATE TABLE view_tenants
(
    tenant_id    text PRIMARY KEY,
    workspace_id text    NOT NULL,
    name         text    NOT NULL,
    position     integer NOT NULL
) STRICT;
CREATE INDEX view_tenants_name ON view_tenants (name, tenant_id);

-- Each run's steps (projection "timeline", append-only): run detail's timeline.
CREATE TABLE view_run_timeline
(
    position    integer PRIMARY KEY,
    run_id      text    NOT NULL,
    at          text    NOT NULL,
    step        text    NOT NULL,
    who         text,
    reason_code text
) STRICT;
CREATE INDEX view_run_timeline_run ON view_run_timeline (run_id, position);
