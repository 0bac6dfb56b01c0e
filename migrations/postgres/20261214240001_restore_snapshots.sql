-- Restores from a snapshot: provider data, not decisions, so beside the
-- hash-chained event log like `provider_objects`. See docs/providers.md,
-- "Restoring a snapshot".

-- What each inventory sync saw, written in the same transaction as the sync's
-- rows: one row per (run, kind) it covers, and one per object. A restore names
-- a snapshot as `inventory:<run id>`; the run's completion event carries the
-- hash of these rows (kind, id and content hash per object, in order).
CREATE TABLE provider_snapshots (
    run_id text NOT NULL,
    tenant_id text NOT NULL,
    kind text NOT NULL,
    objects bigint NOT NULL,
    taken_at text NOT NULL,
    PRIMARY KEY (run_id, kind)
);
CREATE TABLE provider_snapshot_objects (
    run_id text NOT NULL,
    kind text NOT NULL,
    external_id text NOT NULL,
    display_name text,
    content_hash text NOT NULL,
    PRIMARY KEY (run_id, kind, external_id)
);
-- Each distinct JSON once, by its SHA-256, however many snapshots hold it.
CREATE TABLE provider_contents (
    content_hash text PRIMARY KEY,
    content text NOT NULL
);

-- An object a restore created again in place of a snapshot's (the provider
-- gave it a new id): the next restore compares with it instead of creating
-- the object once more.
CREATE TABLE provider_replacements (
    tenant_id text NOT NULL,
    kind text NOT NULL,
    external_id text NOT NULL,
    replacement_id text NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (tenant_id, kind, external_id)
);

-- A restore run's preview, object by object (`action`: patch, create,
-- unchanged, or left_alone for an object the snapshot does not hold); its
-- counts and snapshot are in the log's `RestoreRunPrepared`.
CREATE TABLE restore_preview_objects (
    restore_run_id text NOT NULL,
    position bigint NOT NULL,
    kind text NOT NULL,
    external_id text NOT NULL,
    display_name text,
    action text NOT NULL,
    changed_fields text NOT NULL,
    PRIMARY KEY (restore_run_id, position)
);

-- What a restore's execution did, object by object; a failure keeps the
-- provider's status, code, request id and words. The run's counts are in the
-- log's completion event.
CREATE TABLE restore_outcomes (
    run_id text NOT NULL,
    kind text NOT NULL,
    external_id text NOT NULL,
    position bigint NOT NULL,
    display_name text,
    outcome text NOT NULL,
    target_id text,
    changed_fields text NOT NULL,
    http_status integer,
    provider_code text,
    request_id text,
    message text,
    PRIMARY KEY (run_id, kind, external_id)
);
