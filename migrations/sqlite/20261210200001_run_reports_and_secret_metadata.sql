-- What a run's end reported (projection "runs") and what the log records of a
-- connection's client secret and of what execution showed about it
-- (projection "connections"). All nullable: runs and connections from before
-- this migration had none of it, which is also what a rebuild gives them, so
-- neither projection needs to start again.
ALTER TABLE view_runs ADD COLUMN result text;
ALTER TABLE view_runs ADD COLUMN snapshot_hash text;
ALTER TABLE view_runs ADD COLUMN provider_code text;
ALTER TABLE view_runs ADD COLUMN provider_request_id text;
ALTER TABLE view_runs ADD COLUMN provider_message text;

ALTER TABLE view_connections ADD COLUMN secret_client_id text;
ALTER TABLE view_connections ADD COLUMN secret_directory_tenant_id text;
ALTER TABLE view_connections ADD COLUMN secret_fingerprint text;
ALTER TABLE view_connections ADD COLUMN secret_expires_at text;
ALTER TABLE view_connections ADD COLUMN secret_set_at text;
ALTER TABLE view_connections ADD COLUMN observed_run_id text;
ALTER TABLE view_connections ADD COLUMN observed_provider_code text;
