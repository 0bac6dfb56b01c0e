-- The log-wide chain (docs/chain.md): each position's hash covers the previous
-- position's hash, the position and the event's own stream-chain hash.
--
-- SQLite has no SHA-256 of its own, so the hash is computed by dispatch-gate in
-- the transaction that inserts the event (the position is given by the
-- `events_number` trigger in that same transaction). Rows numbered before
-- this migration are sealed by `dispatch-gate migrate` right after it.
ALTER TABLE events ADD COLUMN log_hash text;
