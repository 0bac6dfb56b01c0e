-- Aggregate snapshots, written by dispatch-gate's executor (cqrs-es's own
-- snapshot modes corrupt state). One row per stream: the latest snapshot.
-- A row whose version does not match the running code, that does not parse,
-- or that is ahead of its stream is ignored and the stream is replayed.
CREATE TABLE aggregate_snapshots
(
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    version        text   NOT NULL,
    head           text   NOT NULL,
    state          text   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
