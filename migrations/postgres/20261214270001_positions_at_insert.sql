-- An event takes its log position and its log-chain seal in the transaction
-- that inserts it, so that one write transaction appends the event and hands
-- back its position (`INSERT … RETURNING position`): no second, numbering
-- transaction per write (issue 27).
--
-- Commit order is kept the way the sequencer kept it (20261127000002): one
-- numbering at a time, under the same advisory lock. The lock is taken in
-- this trigger and held until the inserting transaction ends, and PostgreSQL
-- releases a transaction's locks only after its commit is visible; so the
-- next writer numbers after a row it can see, and a reader following
-- `position > checkpoint` can never be passed by a late commit: a transaction
-- that holds a lower position commits before any higher one is given. The
-- price: commits that append events follow one another (no two share a WAL
-- flush), and a transaction must not hold an event insert open (BENCHMARKS.md,
-- docs/consistency.md). The gate's own writes are one statement each.
--
-- The seal is the one `dg_sequence` gives (20261202300001): chained on from
-- the hash of the highest position, read after the lock is held. Each
-- statement of this (volatile) function sees what committed before it
-- started, and the rows its own transaction inserted before, so a commit of
-- several events chains them in insert order. It refuses to run outside READ
-- COMMITTED, as the sequencer does.
--
-- Rows inserted with a position (the bench's bulk seeding) keep it and get no
-- seal here. Rows inserted before this migration, and not yet numbered, are
-- numbered by `dg_sequence` as before (it takes the same lock); this
-- migration numbers those already committed.
CREATE FUNCTION dg_number_at_insert() RETURNS trigger
LANGUAGE plpgsql AS
$$
DECLARE
    top_position bigint;
    top_hash text;
BEGIN
    IF NEW.position IS NOT NULL THEN
        RETURN NEW;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'dispatch-gate numbers the log under READ COMMITTED only, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('dispatch-gate/sequencer'));
    SELECT position, log_hash INTO top_position, top_hash
    FROM events WHERE position IS NOT NULL
    ORDER BY position DESC LIMIT 1;
    NEW.position := COALESCE(top_position, 0) + 1;
    NEW.log_hash := dg_log_step(NULL,
        COALESCE(top_hash, '0000000000000000000000000000000000000000000000000000000000000000'),
        NEW.position, dg_event_hash(NEW.sequence, NEW.metadata));
    RETURN NEW;
END
$$;

-- BEFORE triggers fire in name order: the stream check of 20261207260001
-- (`events_follow_their_stream`) refuses a gap before this one takes the lock.
CREATE TRIGGER events_take_their_position
    BEFORE INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION dg_number_at_insert();

SELECT dg_sequence(1000000000, false);
