-- The gate's writer now inserts each event with its position and its log-chain
-- seal already computed (it holds SQLite's one write lock, reads the highest
-- position and its hash once, and chains on from them): one INSERT per event,
-- no UPDATE by this trigger and none by the seal afterwards (issue 27).
--
-- Rows inserted without a position (by anything else) are numbered as before;
-- a row that carries one keeps it. The writer only gives the next position
-- after the highest, so commit order stays the log's order.
DROP TRIGGER events_number;
CREATE TRIGGER events_number AFTER INSERT ON events
WHEN NEW.position IS NULL
BEGIN
    UPDATE events
    SET position = (SELECT COALESCE(MAX(position), 0) + 1 FROM events)
    WHERE rowid = NEW.rowid;
END;
