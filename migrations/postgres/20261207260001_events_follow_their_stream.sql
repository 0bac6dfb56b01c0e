-- An event is appended right after its stream's last event, never past a gap.
--
-- Under a failover (docs/ha.md) the new primary holds every acknowledged commit,
-- but not always a commit that was visible on the old primary before its
-- standby confirmed it: PostgreSQL shows a commit to other sessions before
-- synchronous replication acknowledges it. A writer that read such an event
-- (an executor keeps streams warm in memory) would append after it on the new
-- primary, leaving a gap and deciding on an event that no longer exists. The
-- primary key cannot see that; this check does, and answers as to a concurrent
-- append (unique_violation, which postgres-es reports as a conflict), so the
-- executor loads the stream again and decides on what the log holds.
--
-- Rows of one commit are inserted one statement each, so a commit of several
-- events sees its own earlier rows. SQLite, one file on one machine, has no
-- failover and no such check.
CREATE FUNCTION dg_follows_stream() RETURNS trigger
LANGUAGE plpgsql AS
$$
BEGIN
    IF NEW.sequence > 1 AND NOT EXISTS (
        SELECT 1 FROM events
        WHERE aggregate_type = NEW.aggregate_type
          AND aggregate_id = NEW.aggregate_id
          AND sequence = NEW.sequence - 1
    ) THEN
        RAISE EXCEPTION 'event % of %/% does not follow its stream''s last event',
            NEW.sequence, NEW.aggregate_type, NEW.aggregate_id
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_follow_their_stream
    BEFORE INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION dg_follows_stream();
