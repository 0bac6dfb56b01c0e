-- A position handed to a writer is durable before it is handed out.
--
-- dg_position promised that (20261202000001) for the rows it numbers itself,
-- whose numbering commits synchronously. But it also returns positions that
-- another session numbered: the background sequencer, which commits without
-- waiting for its WAL flush, or a writer whose synchronous commit is visible
-- before its standby confirmed it. If the primary dies then (a failover, see
-- docs/ha.md), the new primary numbers those rows again, maybe otherwise, and
-- a `Gate-Position` already answered would name another event.
--
-- So the call writes a transactional WAL record (a logical message, nothing
-- else reads it): its commit then waits, as any synchronous commit does, for
-- the flush and the synchronous standby, and that covers all WAL before it,
-- the numbering read included. A transaction id alone would not: PostgreSQL
-- commits a transaction that wrote no WAL without waiting. When the call
-- numbered rows itself, the record rides on the commit it makes anyway.
CREATE OR REPLACE FUNCTION dg_position(stream_type text, stream_id text, stream_sequence bigint) RETURNS bigint
LANGUAGE plpgsql AS
$$
DECLARE
    found bigint;
BEGIN
    LOOP
        SELECT position INTO found FROM events
        WHERE aggregate_type = stream_type AND aggregate_id = stream_id AND sequence = stream_sequence;
        IF found IS NOT NULL THEN
            PERFORM pg_logical_emit_message(true, 'dispatch-gate', 'position');
            RETURN found;
        END IF;
        IF dg_sequence(10000, false) = 0 THEN
            SELECT position INTO found FROM events
            WHERE aggregate_type = stream_type AND aggregate_id = stream_id AND sequence = stream_sequence;
            IF found IS NOT NULL THEN
                PERFORM pg_logical_emit_message(true, 'dispatch-gate', 'position');
            END IF;
            RETURN found;
        END IF;
    END LOOP;
END
$$;
