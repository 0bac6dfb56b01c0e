-- The live stream (GET /v1/stream) reads the decisions after a log position
-- across every tenant the caller may see: an index on the position alone.
CREATE INDEX view_decisions_position ON view_decisions (position);
