-- What a run did, on the notification of its end (projection "notifications"):
-- a succeeded sync's counts per kind, a restore's per object. Nullable:
-- notifications from before this migration had none, which a rebuild fills.
ALTER TABLE view_notifications ADD COLUMN result text;
