-- An event takes its log position and its log-chain seal in the transaction
-- that inserts it, so that one write hands back its position: no second,
-- numbering transaction per write, and no rewrite of every row by the
-- sequencer (issue 27).
--
-- Commit order is kept the way the sequencer kept it (20261127000002): one
-- numbering at a time, under the same advisory lock. The lock is taken in
-- this trigger and held until the inserting transaction ends, and PostgreSQL
-- releases a transaction's locks only after its commit is visible; so the
-- next writer numbers after a row it can see, and a reader following
-- `position > checkpoint` can never be passed by a late commit: a transaction
-- that holds a lower position commits before any higher one is given. So an
-- event insert must not be held open (docs/consistency.md); the gate's own
-- appends go through `dg_append` below, which holds the lock only while the
-- server inserts.
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
    -- dg_log_step's formula (20261202300001), written out: one call fewer per row.
    NEW.log_hash := encode(sha256(convert_to(
        'dispatch-gate-log/1:'
            || COALESCE(top_hash, '0000000000000000000000000000000000000000000000000000000000000000')
            || ':' || NEW.position::text || ':' || dg_event_hash(NEW.sequence, NEW.metadata),
        'UTF8')), 'hex');
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

-- The gate's append: a commit's events (arrays, one per column, in sequence
-- order, all with the commit's metadata), unless a guarding stream has an
-- event past the sequence the decision read (then nothing is written and
-- `positions` is NULL). Returns the events' positions. (Guards are checked in
-- a statement of their own: a stream that moves after it is ordered after
-- this append, as if it had moved a moment later.)
--
-- Called on its own (`CALL`, one round trip), it runs two transactions. The
-- first inserts the events, numbered and sealed by the trigger above, and
-- commits without waiting for its WAL flush: the numbering lock is released as
-- soon as the commit is visible, never held across a flush, so concurrent
-- appends are numbered one after another but flushed together. The second
-- writes a transactional WAL record and commits as the session is configured
-- (durably by default, to the synchronous standby with synchronous
-- replication): its commit waits for all WAL before it, the first
-- transaction's included. So the positions are durable before the call
-- returns, as `dg_position` made them (20261207260002); a crash in between
-- loses the first transaction with everything after it, and its caller got no
-- answer. (`dg_sequence`'s relaxed numbering rests on the same argument.)
CREATE PROCEDURE dg_append(
    stream_type text, stream_id text,
    sequences bigint[], event_types text[], event_versions text[], payloads text[],
    commit_metadata text,
    guard_types text[], guard_ids text[], guard_sequences bigint[],
    INOUT positions bigint[] DEFAULT NULL)
LANGUAGE plpgsql AS
$$
DECLARE
    metadata_json jsonb := CAST(commit_metadata AS jsonb);
    numbered bigint;
BEGIN
    IF cardinality(guard_types) > 0 AND EXISTS (
        SELECT 1 FROM unnest(guard_types, guard_ids, guard_sequences) AS g(t, id, s)
        JOIN events x ON x.aggregate_type = g.t AND x.aggregate_id = g.id AND x.sequence = g.s + 1)
    THEN
        RETURN;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    positions := '{}';
    -- One statement per event, in order: each trigger sees the ones before.
    FOR i IN 1 .. cardinality(sequences) LOOP
        INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                            payload, metadata)
        VALUES (stream_type, stream_id, sequences[i], event_types[i], event_versions[i],
                CAST(payloads[i] AS jsonb), metadata_json)
        RETURNING position INTO numbered;
        positions := positions || numbered;
    END LOOP;
    COMMIT;
    PERFORM pg_logical_emit_message(true, 'dispatch-gate', 'position');
END
$$;
