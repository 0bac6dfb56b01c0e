-- The event log, in the shape sqlite-es 0.5 reads and writes.
-- Keep the composite primary key: sqlite-es maps only its violation (1555) to a conflict.
-- An applied migration is never edited: add a new file instead.
CREATE TABLE events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;
