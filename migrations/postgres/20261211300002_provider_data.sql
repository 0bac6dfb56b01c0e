-- What the syncs found: provider data, not decisions, so outside the
-- hash-chained event log. Written by the worker; each succeeded sync's
-- completion event carries the hash of the snapshot it left here.
CREATE TABLE provider_objects (
    tenant_id text NOT NULL,
    kind text NOT NULL,
    external_id text NOT NULL,
    display_name text,
    modified_at text,
    content text NOT NULL,
    content_hash text NOT NULL,
    first_seen_run text NOT NULL,
    last_seen_run text NOT NULL,
    changed_at text NOT NULL,
    removed_at text,
    PRIMARY KEY (tenant_id, kind, external_id)
);
CREATE INDEX provider_objects_newest ON provider_objects (tenant_id, changed_at DESC, kind, external_id);

-- Where a tenant's next delta sync resumes (Graph's `@odata.deltaLink`).
CREATE TABLE provider_delta_links (
    tenant_id text NOT NULL,
    kind text NOT NULL,
    link text NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);
