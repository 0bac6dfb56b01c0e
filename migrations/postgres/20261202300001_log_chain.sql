-- The log-wide chain (docs/chain.md): each position's hash covers the previous
-- position's hash, the position and the event's own stream-chain hash, so
-- deleting or inserting any event anywhere breaks every later position.
--
-- It is sealed where the position is given: the sequencer computes the hash in
-- the same statement that numbers the row, one sequencer at a time, so the
-- chain follows commit order exactly. The event's own hash is read from its
-- metadata (`chain.hashes` at index `sequence - chain.first`); that hash already
-- covers the event's whole content.
ALTER TABLE events ADD COLUMN log_hash text;

-- The event's own hash as the log chain sees it: the `sequence - chain.first`-th
-- (0-based) entry of `chain.hashes`, or '' when the metadata does not name one.
-- Never fails: a malformed row written outside the gate must not stop the sequencer.
CREATE FUNCTION dg_event_hash(stream_sequence bigint, metadata jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS
$$
SELECT CASE
    WHEN jsonb_typeof(metadata -> 'chain.first') = 'string'
     AND jsonb_typeof(metadata -> 'chain.hashes') = 'string'
     AND metadata ->> 'chain.first' ~ '^[0-9]{1,18}$'
     AND stream_sequence - (metadata ->> 'chain.first')::bigint BETWEEN 0 AND 1000000
    THEN split_part(metadata ->> 'chain.hashes', ',',
                    (stream_sequence - (metadata ->> 'chain.first')::bigint + 1)::int)
    ELSE ''
END
$$;

-- One step of the log chain: sha256 over "dispatch-gate-log/1:<prev>:<position>:<event hash>".
-- As an aggregate's step, `state` is the previous position's hash; the first
-- row of a run starts from `prev`.
CREATE FUNCTION dg_log_step(state text, prev text, log_position bigint, event_hash text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS
$$
BEGIN
    RETURN encode(sha256(convert_to(
        'dispatch-gate-log/1:' || COALESCE(state, prev) || ':' || log_position::text || ':' || event_hash,
        'UTF8')), 'hex');
END
$$;

-- Run as a window (ORDER BY position): the chain over consecutive positions.
CREATE AGGREGATE dg_log_chain(text, bigint, text) (SFUNC = dg_log_step, STYPE = text);

-- Rows numbered before this migration are sealed now, in position order.
WITH sealed AS (
    SELECT aggregate_type, aggregate_id, sequence,
           dg_log_chain('0000000000000000000000000000000000000000000000000000000000000000',
                        position, dg_event_hash(sequence, metadata)) OVER (ORDER BY position) AS h
    FROM events WHERE position IS NOT NULL
)
UPDATE events e SET log_hash = sealed.h
FROM sealed
WHERE e.aggregate_type = sealed.aggregate_type
  AND e.aggregate_id = sealed.aggregate_id
  AND e.sequence = sealed.sequence;

-- The sequencer of 20261202000001, unchanged but for the seal: the rows it
-- numbers get their log hash in the same UPDATE, chained on from the hash of
-- the highest position given so far.
CREATE OR REPLACE FUNCTION dg_sequence(batch bigint, relaxed boolean) RETURNS bigint
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
        SELECT aggregate_type, aggregate_id, sequence, metadata,
               row_number() OVER (ORDER BY recorded_at, aggregate_type, aggregate_id, sequence) AS n
        FROM events WHERE position IS NULL
        ORDER BY recorded_at, aggregate_type, aggregate_id, sequence
        LIMIT batch
    ), top AS (
        SELECT t.p,
               COALESCE((SELECT log_hash FROM events WHERE position = t.p),
                        '0000000000000000000000000000000000000000000000000000000000000000') AS h
        FROM (SELECT COALESCE(MAX(position), 0) AS p FROM events) t
    ), sealed AS (
        SELECT pending.aggregate_type, pending.aggregate_id, pending.sequence,
               top.p + pending.n AS position,
               dg_log_chain(top.h, top.p + pending.n, dg_event_hash(pending.sequence, pending.metadata))
                   OVER (ORDER BY pending.n) AS h
        FROM pending, top
    )
    UPDATE events e SET position = sealed.position, log_hash = sealed.h
    FROM sealed
    WHERE e.aggregate_type = sealed.aggregate_type
      AND e.aggregate_id = sealed.aggregate_id
      AND e.sequence = sealed.sequence;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    RETURN numbered;
END
$$;
