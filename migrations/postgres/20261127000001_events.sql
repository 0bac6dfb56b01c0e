-- The event log, in the shape postgres-es 0.5 reads and writes.
-- An applied migration is never edited: add a new file instead.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        jsonb                        NOT NULL,
    metadata       jsonb                        NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
