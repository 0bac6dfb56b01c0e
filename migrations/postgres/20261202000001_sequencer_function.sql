-- The sequencer as functions, so that a writer learns its event's log
-- position in one round trip, and the advisory lock is held only while the
-- server numbers rows, never across a client round trip.
--
-- dg_sequence numbers committed, unnumbered events above every position given
-- so far, one sequencer at a time (the advisory lock), as before: a
-- transaction that commits late is numbered late and never skipped. Each
-- statement must see what committed before it began, so it refuses to run
-- outside READ COMMITTED.
--
-- `relaxed`: the numbering commits without waiting for its WAL flush. Only the
-- background sequencer asks for it: a crash may lose its latest numbering and
-- those rows are numbered again, and nobody was told those positions (views
-- that saw them are lost with them: WAL is flushed in order). A position
-- handed to a client (dg_position) is committed durably, so that it can never
-- come to name another event.
CREATE FUNCTION dg_sequence(batch bigint, relaxed boolean) RETURNS bigint
LANGUAGE plpgsql AS
$$
DECLARE
    numbered bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'dispatch-gate numbers the log under READ COMMITTED only, not %',
            current_setting('transaction_isolation');
    END IF;
    IF relaxed THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('dispatch-gate/sequencer'));
    WITH pending AS (
        SELECT aggregate_type, aggregate_id, sequence,
               row_number() OVER (ORDER BY recorded_at, aggregate_type, aggregate_id, sequence) AS n
        FROM events WHERE position IS NULL
        ORDER BY recorded_at, aggregate_type, aggregate_id, sequence
        LIMIT batch
    ), top AS (SELECT COALESCE(MAX(position), 0) AS p FROM events)
    UPDATE events e SET position = top.p + pending.n
    FROM pending, top
    WHERE e.aggregate_type = pending.aggregate_type
      AND e.aggregate_id = pending.aggregate_id
      AND e.sequence = pending.sequence;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    RETURN numbered;
END
$$;

-- The position of a committed event, numbering it (and every event committed
-- before it) first if the sequencer has not yet. Each statement of the
-- function sees what committed before it started, so a writer that waited for
-- the lock finds its event numbered by the sequencer before it.
CREATE FUNCTION dg_position(stream_type text, stream_id text, stream_sequence bigint) RETURNS bigint
LANGUAGE plpgsql AS
$$
DECLARE
    found bigint;
BEGIN
    LOOP
        SELECT position INTO found FROM events
        WHERE aggregate_type = stream_type AND aggregate_id = stream_id AND sequence = stream_sequence;
        IF found IS NOT NULL THEN
            RETURN found;
        END IF;
        IF dg_sequence(10000, false) = 0 THEN
            SELECT position INTO found FROM events
            WHERE aggregate_type = stream_type AND aggregate_id = stream_id AND sequence = stream_sequence;
            RETURN found;
        END IF;
    END LOOP;
END
$$;
