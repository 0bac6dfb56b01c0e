-- Global commit order for catch-up projections.
--
-- A sequence value taken at insert time is not commit order: a reader following
-- `position > last_seen` could skip a transaction that took its value early and
-- committed late. So nothing takes a position at insert. Events arrive with
-- `position` NULL and one sequencer (serialised by an advisory lock) numbers the
-- rows it can see — committed rows only — above every position already given.
-- A row that commits late is numbered late, never below a reader's checkpoint.
ALTER TABLE events ADD COLUMN position bigint;
ALTER TABLE events ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_unpositioned ON events (recorded_at) WHERE position IS NULL;

CREATE TABLE projection_checkpoints
(
    name     text PRIMARY KEY,
    position bigint NOT NULL
);

-- Monitoring → Operations: one row per accepted run.
CREATE TABLE view_runs
(
    run_id           text PRIMARY KEY,
    tenant_id        text    NOT NULL,
    connection_id    text    NOT NULL,
    connection_name  text    NOT NULL,
    operation        text    NOT NULL,
    scope            text    NOT NULL,
    status           text    NOT NULL,
    initiator_id     text    NOT NULL,
    initiator_name   text    NOT NULL,
    queued_at        text    NOT NULL,
    started_at       text,
    finished_at      text,
    reason_code      text,
    worker_id        text,
    cancel_requested boolean NOT NULL,
    position         bigint  NOT NULL
);
CREATE INDEX view_runs_tenant ON view_runs (tenant_id, position);
CREATE INDEX view_runs_position ON view_runs (position);

-- Every start decision, blocked ones included.
CREATE TABLE view_decisions
(
    decision_id   text PRIMARY KEY,
    tenant_id     text   NOT NULL,
    at            text   NOT NULL,
    actor_id      text   NOT NULL,
    actor_name    text   NOT NULL,
    operation     text   NOT NULL,
    outcome       text   NOT NULL,
    reason_code   text,
    run_id        text,
    connection_id text,
    request_id    text,
    evidence      text,
    position      bigint NOT NULL
);
CREATE INDEX view_decisions_tenant ON view_decisions (tenant_id, position);
CREATE INDEX view_decisions_run ON view_decisions (run_id, position);

CREATE TABLE view_connections
(
    connection_id text PRIMARY KEY,
    tenant_id     text    NOT NULL,
    display_name  text    NOT NULL,
    provider      text    NOT NULL,
    is_default    boolean NOT NULL,
    enabled       boolean NOT NULL,
    consent       text    NOT NULL,
    credentials   text    NOT NULL,
    active_run_id text,
    position      bigint  NOT NULL
);
CREATE INDEX view_connections_tenant ON view_connections (tenant_id, position);

CREATE TABLE view_members
(
    tenant_id    text    NOT NULL,
    user_id      text    NOT NULL,
    role         text    NOT NULL,
    capabilities text    NOT NULL,
    can_view     boolean NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX view_members_user ON view_members (user_id);

-- Terminal-run notifications, to the run's initiator only.
CREATE TABLE view_notifications
(
    notification_id text PRIMARY KEY,
    recipient_id    text   NOT NULL,
    tenant_id       text   NOT NULL,
    run_id          text   NOT NULL,
    operation       text   NOT NULL,
    status          text   NOT NULL,
    reason_code     text,
    at              text   NOT NULL,
    position        bigint NOT NULL
);
CREATE INDEX view_notifications_recipient ON view_notifications (recipient_id, position);

CREATE TABLE view_run_initiators
(
    run_id       text PRIMARY KEY,
    tenant_id    text NOT NULL,
    operation    text NOT NULL,
    initiator_id text NOT NULL
);
