-- An event takes its log position and its log-chain seal in the transaction
-- that inserts it, so that one write hands back its position: no second,
-- numbering transaction per write, and no rewrite of every row by the
-- sequencer (issue 27).
--
-- Commit order is kept the way the sequencer kept it (20261127000002): one
-- numbering at a time, under the same advisory lock. The lock is taken by the
-- insert trigger and held until the inserting transaction ends, and
-- PostgreSQL releases a transaction's locks only after its commit is visible;
-- so the next writer numbers after a row it can see, and a reader following
-- `position > checkpoint` is never passed by a late commit: a transaction that
-- holds a lower position commits before any higher one is given. So an event
-- insert must not be held open (docs/consistency.md); the gate's own appends
-- go through `dg_append` below, which holds the lock only while the server
-- inserts.
--
-- The seal is the one `dg_sequence` gives (20261202300001): chained on from
-- the hash of the highest position, read once the lock is held. Each statement
-- of the (volatile) trigger function sees what committed before it started,
-- and the rows its own transaction inserted before, so a commit of several
-- events chains them in insert order. It refuses to run outside READ
-- COMMITTED, as the sequencer does.
--
-- Rows inserted with a position (the bench's bulk seeding) keep it and get no
-- seal here. Rows inserted unnumbered before this migration are numbered by
-- `dg_sequence` as before (it takes the same lock): those already committed
-- right here, any later by the catch-up loop (a running binary of before).
--
-- One trigger does both jobs of an insert: the stream check of
-- 20261207260001 (an event follows its stream's last one; `unique_violation`
-- otherwise, which reads as a concurrent append), first, then the numbering.
-- It replaces `events_follow_their_stream`: one trigger call per row, not two.
CREATE FUNCTION dg_take_place() RETURNS trigger
LANGUAGE plpgsql AS
$$
DECLARE
    top_position bigint;
    top_hash text;
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

DROP TRIGGER events_follow_their_stream ON events;
DROP FUNCTION dg_follows_stream();

CREATE TRIGGER events_take_their_place
    BEFORE INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION dg_take_place();

SELECT dg_sequence(1000000000, false);

-- The gate's append: a commit's events (arrays, one per column, in sequence
-- order, all with the commit's metadata), unless a guarding stream has an
-- event past the sequence the decision read (then nothing is written and
-- `positions` is NULL). Returns the events' positions. (Guards are checked
-- before the insert: a stream that moves after its check is ordered after this
-- append, as if it had moved a moment later.)
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
--
-- Its statements, and the trigger's, run on generic plans (primary-key and
-- position lookups): their shapes never change, and PostgreSQL would
-- otherwise plan some of them again on every call when a custom plan looks
-- cheaper.
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
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true),
            set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. coalesce(cardinality(guard_types), 0) LOOP
        IF EXISTS (
            SELECT 1 FROM events
            WHERE aggregate_type = guard_types[i] AND aggregate_id = guard_ids[i]
              AND sequence = guard_sequences[i] + 1)
        THEN
            RETURN;
        END IF;
    END LOOP;
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
